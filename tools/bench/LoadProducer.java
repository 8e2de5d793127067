// Paced Kafka load producer of the benchmark (tools/bench): kafka-python tops out at a few thousand records/s
// per process on this machine, so the offered load comes from the JVM client (the Kafka jars of the stack).
//
// Usage: java -cp '.cache/jars/kafka/*' tools/bench/LoadProducer.java BOOTSTRAP TOPIC TEMPLATES RATE SECONDS
//            PREFIX [MAX_RECORDS]
// TEMPLATES: one record per line, `key<TAB>rest`, where `rest` is an event's JSON without its opening `{`
// and without event_id/ts/ts_ms; each record is sent as {"event_id":"PREFIX-n","ts":now,"ts_ms":now,rest
// (now = the wall clock in ms when the record is built), cycling through the templates; `%N%` in a key or
// template is replaced by the record's sequence number (a new person per record, for state-scale runs). RATE <= 0: as fast as
// possible. Stops after SECONDS or MAX_RECORDS. Prints `{"started_ms": T}` when it starts sending, then a
// JSON line: sent, acked, failed, elapsed_s, start_ms, end_ms.
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class LoadProducer {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        List<String> lines = Files.readAllLines(Path.of(args[2]), StandardCharsets.UTF_8);
        double rate = Double.parseDouble(args[3]);
        long durationMs = (long) (Double.parseDouble(args[4]) * 1000);
        String prefix = args[5];
        long maxRecords = args.length > 6 ? Long.parseLong(args[6]) : Long.MAX_VALUE;
        byte[][] keys = new byte[lines.size()][];
        String[] rests = new String[lines.size()];
        boolean[] numbered = new boolean[lines.size()];
        for (int i = 0; i < lines.size(); i++) {
            String line = lines.get(i);
            int tab = line.indexOf('\t');
            keys[i] = line.substring(0, tab).getBytes(StandardCharsets.UTF_8);
            rests[i] = line.substring(tab + 1);
            numbered[i] = line.contains("%N%");
        }
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("acks", "1");
        props.put("linger.ms", "5");
        props.put("batch.size", String.valueOf(256 * 1024));
        props.put("compression.type", "none");  // kafka-python (the naive consumer) has no lz4 codec here
        props.put("max.in.flight.requests.per.connection", "5");
        AtomicLong acked = new AtomicLong(), failed = new AtomicLong();
        long sent = 0;
        long start;
        try (KafkaProducer<byte[], byte[]> producer =
                 new KafkaProducer<>(props, new ByteArraySerializer(), new ByteArraySerializer())) {
            producer.partitionsFor(topic);  // metadata before the clock starts
            start = System.currentTimeMillis();
            System.out.println("{\"started_ms\": " + start + "}");
            System.out.flush();
            while (sent < maxRecords) {
                long now = System.currentTimeMillis();
                long elapsed = now - start;
                if (elapsed >= durationMs) {
                    break;
                }
                long due = rate > 0 ? Math.min(maxRecords, (long) (rate * (elapsed + 5) / 1000.0)) : sent + 1000;
                if (sent >= due) {
                    Thread.sleep(2);
                    continue;
                }
                for (; sent < due && sent < maxRecords; sent++) {
                    int i = (int) (sent % rests.length);
                    String value = "{\"event_id\":\"" + prefix + "-" + sent + "\",\"ts\":" + now + ",\"ts_ms\":" + now
                        + "," + (numbered[i] ? rests[i].replace("%N%", Long.toString(sent)) : rests[i]);
                    byte[] key = numbered[i] ? new String(keys[i], StandardCharsets.UTF_8).replace("%N%", Long.toString(sent))
                        .getBytes(StandardCharsets.UTF_8) : keys[i];
                    producer.send(new ProducerRecord<>(topic, null, now, key, value.getBytes(StandardCharsets.UTF_8)),
                        (metadata, error) -> (error == null ? acked : failed).incrementAndGet());
                }
            }
            producer.flush();
        }
        long end = System.currentTimeMillis();
        System.out.println("{\"sent\": " + sent + ", \"acked\": " + acked.get() + ", \"failed\": " + failed.get()
            + ", \"elapsed_s\": " + (end - start) / 1000.0 + ", \"start_ms\": " + start + ", \"end_ms\": " + end + "}");
    }
}
