"""Privacy: PII normalization and hashing, no raw PII in any output or kept state, erasure leaves nothing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from udfs.identity.engine import IdentityService
from udfs.identity.pii import (
    PII_KEY_ENV,
    PII_KEY_FILE_ENV,
    PiiHasher,
    PiiKeyMissing,
    normalize_email,
    normalize_phone,
    redact_emails,
)
from udfs.identity.records import KafkaRecord
from udfs.stores.ops import DynamoDelete, DynamoPut, RedisDelete, RedisHash, RedisSet

HASHER = PiiHasher(b"unit-test-key-0123456789")
T0 = 1_700_000_000_000


def test_email_and_phone_normalization() -> None:
    assert normalize_email("  Anna.Schmidt@Example.DE ") == "anna.schmidt@example.de"
    assert normalize_email("not an email") is None
    assert normalize_phone("0171 234-5678", "49") == "+491712345678"
    assert normalize_phone("+49 (171) 2345678", "1") == "+491712345678"
    assert normalize_phone("0049 171 2345678", "1") == "+491712345678"
    assert normalize_phone("(415) 555-0100 ext. 12", "1") == "+14155550100"
    assert normalize_phone("12", "49") is None and normalize_phone("call me", "49") is None


def test_hmac_is_keyed_typed_and_stable() -> None:
    other = PiiHasher(b"another-key-0123456789")
    assert HASHER.digest("email", "a@b.io") == HASHER.digest("email", "a@b.io")
    assert HASHER.digest("email", "a@b.io") != other.digest("email", "a@b.io")
    assert HASHER.digest("email", "x") != HASHER.digest("phone", "x")
    assert len(HASHER.digest("email", "a@b.io")) == 32


def test_missing_key_is_a_clear_error() -> None:
    with pytest.raises(PiiKeyMissing, match=PII_KEY_ENV):
        PiiHasher.from_env({})
    with pytest.raises(PiiKeyMissing, match="at least 16 bytes"):
        PiiHasher.from_env({PII_KEY_ENV: "short"})
    assert PiiHasher.from_env({PII_KEY_ENV: "x" * 32}).digest("email", "a") == \
        PiiHasher(b"x" * 32).digest("email", "a")


def test_key_from_a_mounted_secret_file(tmp_path: Any) -> None:
    secret = tmp_path / "tagstream_pii_key"
    secret.write_text("y" * 32 + "\n")
    from_file = PiiHasher.from_env({PII_KEY_FILE_ENV: str(secret)})
    assert from_file.digest("email", "a") == PiiHasher(b"y" * 32).digest("email", "a")
    assert PiiHasher.from_env({PII_KEY_ENV: "x" * 32, PII_KEY_FILE_ENV: str(secret)}).digest("email", "a") == \
        PiiHasher(b"x" * 32).digest("email", "a")  # the variable wins
    with pytest.raises(PiiKeyMissing, match=PII_KEY_FILE_ENV):
        PiiHasher.from_env({PII_KEY_FILE_ENV: str(tmp_path / "missing")})


def test_redact_emails_in_free_text() -> None:
    assert redact_emails("mail anna@shop.io now") == "mail [email] now"


# --- no raw PII anywhere -------------------------------------------------------------------------

RAW = {
    "emails": ["Anna.Schmidt@Mail.example.de", "bob@shop.io"],
    "phones": ["0171 2345678", "+44 20 7946 0958"],
    "names": ["Annabelle", "Schmidtke", "Roberto"],
    "other": ["1981-04-17", "Hauptstrasse"],
}


def pii_events() -> list[dict[str, Any]]:
    e1, e2 = RAW["emails"]
    p1, p2 = RAW["phones"]
    base = {"type": "identify", "source": "crm"}
    return [
        {**base, "event_id": "i1", "ts": T0, "ids": {"anonymous_id": "a1", "email": e1},
         "traits": {"first_name": "Annabelle", "last_name": "Schmidtke", "full_name": "Annabelle Schmidtke",
                    "dob": "1981-04-17", "email": e1,
                    "phone": p1, "street": "Hauptstrasse", "zip": "10115", "city": "Berlin"}},
        {**base, "event_id": "i2", "ts": T0 + 10, "ids": {"anonymous_id": "a2"},
         "traits": {"first_name": "Annabelle", "last_name": "Schmidtke", "dob": "1981-04-17", "zip": "10115",
                    "street": "Hauptstrasse"}},
        {**base, "event_id": "i3", "ts": T0 + 20, "ids": {"user_id": "u9", "email": e2, "phone": p2},
         "traits": {"first_name": "Roberto", "email": e2.upper()}},
        {"event_id": "v1", "type": "page_view", "ts": T0 + 30, "ids": {"email": e1},
         "props": {"url": "https://shop.io/?ref=" + e1, "query": f"contact {e2}"}},
        {"event_id": "c1", "type": "consent", "ts": T0 + 40, "ids": {"phone": p1},
         "consent": {"personalization": True}},
        {"event_id": "x1", "type": "erase", "ts": T0 + 50, "ids": {"email": e2}},
        {"event_id": "x2", "type": "erase", "ts": T0 + 60, "ids": {"phone": "+1 999 000 1234"}},
    ]


def forbidden_strings() -> list[str]:
    out = []
    for email in RAW["emails"]:
        out += [email, email.lower(), email.split("@")[0].lower()]
    for phone in RAW["phones"]:
        digits = "".join(c for c in phone if c.isdigit())
        out += [phone, digits, "+49" + digits.lstrip("0"), "+" + digits, digits[-7:]]
    return out + RAW["names"] + RAW["other"]


def test_no_output_and_no_kept_state_contains_raw_pii() -> None:
    svc = IdentityService.from_files(HASHER)
    outputs = []
    for event in pii_events():
        outputs += svc.process(event)
    assert any(isinstance(o, KafkaRecord) and o.topic == "person-merges" for o in outputs)  # matching linked
    assert {type(o) for o in outputs} >= {KafkaRecord, RedisSet, RedisHash, DynamoPut}
    text = b"\n".join(orjson.dumps(o.as_dict()) for o in outputs).decode().lower()
    for raw in forbidden_strings():
        assert raw.lower() not in text, f"raw PII {raw!r} leaked into an output"
    # kept state: identifiers and profiles hold hashes only (matching records keep names for fuzzy
    # comparison, but never an email or phone)
    state = b"".join(c.to_bytes() for c in svc.components.values()).decode().lower()
    blocks = orjson.dumps({k: [r.to_list() for r in v.values()]
                           for k, v in svc.blocks.blocks.items()}).decode()
    for raw in forbidden_strings()[: 3 * len(RAW["emails"]) + 5 * len(RAW["phones"])]:
        assert raw.lower() not in state and raw.lower() not in blocks.lower()
    for raw in RAW["names"] + RAW["other"]:
        assert raw.lower() not in state


def test_erased_values_and_tombstones_carry_no_raw_pii() -> None:
    svc = IdentityService.from_files(HASHER)
    for event in pii_events():
        svc.process(event)
    dump = orjson.dumps(sorted(svc.tombstones)).decode().lower()
    assert not any(raw.lower() in dump for raw in forbidden_strings())


# --- erasure -------------------------------------------------------------------------------------


def build() -> IdentityService:
    svc = IdentityService.from_files(HASHER)
    events = [
        {"event_id": "e1", "type": "page_view", "ts": T0, "ids": {"anonymous_id": "a1"}},
        {"event_id": "e2", "type": "identify", "ts": T0 + 1, "source": "crm",
         "ids": {"anonymous_id": "a1", "user_id": "u1", "email": "ann@shop.io"},
         "traits": {"first_name": "Ann", "last_name": "Lee", "dob": "1990-01-02", "zip": "10115",
                    "plan": "gold"}},
        {"event_id": "e3", "type": "consent", "ts": T0 + 2, "ids": {"user_id": "u1"},
         "consent": {"personalization": True}},
        {"event_id": "e4", "type": "login", "ts": T0 + 3, "ids": {"user_id": "u2", "device_id": "d1"}},
        # refused link between the two persons (one user_id per person): same component, other person
        {"event_id": "e5", "type": "login", "ts": T0 + 4, "ids": {"user_id": "u2", "anonymous_id": "a1"}},
        {"event_id": "e6", "type": "identify", "ts": T0 + 5, "ids": {"anonymous_id": "a9"},
         "traits": {"first_name": "Ann", "last_name": "Lee", "dob": "1990-01-02", "zip": "10115"}},
    ]
    for e in events:
        svc.process(e)
    return svc


def test_erase_leaves_nothing_behind() -> None:
    svc = build()
    victim = svc.lookup("user_id:u1")
    email_key = svc.key_of("email", "ann@shop.io")
    assert email_key and svc.lookup("anonymous_id:a9") == victim  # a9 joined by probabilistic match
    members = [k for k, p in svc.mapping().items() if p == victim]
    out = svc.process({"event_id": "x1", "type": "erase", "ts": T0 + 100, "ids": {"email": "ANN@shop.io "}})

    # state: no identifier, link, profile contribution or matching record of the person is left
    assert victim not in svc.mapping().values()
    state = b"".join(c.to_bytes() for c in svc.components.values()).decode()
    for key in members:
        assert key not in state and key not in svc.directory
        assert svc.tombstones[key] == T0 + 100
    assert all(r.anchor not in members for block in svc.blocks.blocks.values() for r in block.values())
    assert svc.lookup("user_id:u2") is not None  # the other person is untouched

    # outputs: audit without PII, store deletions for the wrapper, changelog tombstone
    (audit,) = [o.value for o in out if isinstance(o, KafkaRecord) and o.topic == "erasures"]
    assert audit["person_id"] == victim and audit["ts"] == T0 + 100 and audit["event_id"] == "x1"
    assert audit["identifier"].startswith("email:") and "ann" not in orjson.dumps(audit).decode()
    assert audit["deleted"] == {"identifiers": len(members), "links": 3, "profile_attributes": 2,
                                "matching_records": 2, "redis_keys": len(members) + 1, "dynamodb_items": 1}
    deletes = [o for o in out if isinstance(o, RedisDelete | DynamoDelete)]
    assert all(o.erase for o in deletes) and len({o.version for o in deletes}) == 1  # erasures, one version
    redis_keys = {o.key for o in deletes if isinstance(o, RedisDelete)}
    assert redis_keys == {f"tagstream:profile:{victim}", *(f"tagstream:alias:{k}" for k in members)}
    assert [(o.table, o.key) for o in deletes if isinstance(o, DynamoDelete)] == [
        ("tagstream_profiles", {"person_id": victim})]
    assert KafkaRecord("profiles", victim, None) in out
    # the erase itself goes on to events.identified with the erased person's id (sessions and segments)
    (passed,) = [o for o in out if isinstance(o, KafkaRecord) and o.topic == "events.identified"]
    assert passed.key == victim and passed.value["person_id"] == victim and passed.value["type"] == "erase"
    assert "ann" not in orjson.dumps(passed.value).decode().lower()

    # a replayed older event does not bring the person back; a new one starts a new person
    assert svc.process({"event_id": "e2", "type": "identify", "ts": T0 + 1,
                        "ids": {"user_id": "u1", "email": "ann@shop.io"}, "traits": {"plan": "gold"}}) == []
    assert svc.lookup("user_id:u1") is None
    svc.process({"event_id": "n1", "type": "login", "ts": T0 + 200, "ids": {"user_id": "u1"}})
    reborn = svc.profiles()[svc.lookup("user_id:u1")]
    assert reborn["identifiers"] == ["user_id:u1"] and not reborn["attributes"] and not reborn["consent"]


def test_erasing_an_unknown_identifier_is_audited() -> None:
    svc = IdentityService.from_files(HASHER)
    out = svc.process({"event_id": "x1", "type": "erase", "ts": T0, "ids": {"email": "ghost@shop.io"}})
    (audit,) = [o.value for o in out]
    assert audit["person_id"] is None and audit["deleted"]["identifiers"] == 0
    assert "ghost" not in orjson.dumps(audit).decode()
