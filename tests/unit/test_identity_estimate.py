"""The offline weight estimation tool on a small synthetic labelled sample."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tools.estimate_weights import run
from udfs.identity.config import IDENTITY_CONFIG_PATH, load_identity_config

SYLLABLES = ["an", "be", "cla", "di", "e", "fran", "gre", "han", "i", "jo", "kar", "lu", "ma", "no", "ri",
             "sa", "to", "ul", "ve", "wo"]
CITIES = ["berlin", "hamburg", "munich", "cologne", "bonn", "essen", "kiel", "jena"]


def name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))


def typo(rng: random.Random, text: str) -> str:
    i = rng.randrange(len(text))
    return text[:i] + rng.choice("abcdefghijklmnopqrstuvwxyz") + text[i + 1:]


def sample(tmp_path: Path, people: int = 150, seed: int = 7) -> tuple[Path, Path]:
    """Synthetic people, each with an original record and 0-2 noisy duplicates; returns (records, matches)."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    matches: list[tuple[str, str]] = []
    for p in range(people):
        base = {"first_name": name(rng), "last_name": name(rng),
                "dob": f"19{rng.randint(40, 99)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                "zip": f"{rng.randint(10000, 10099)}", "city": rng.choice(CITIES),
                "street": f"{name(rng)} strasse", "street_number": str(rng.randint(1, 99))}
        ids = [f"p{p}-0"]
        records.append({"id": ids[0], "traits": base})
        for d in range(rng.randint(0, 2)):
            dup = dict(base)
            for field in rng.sample(sorted(dup), 2):
                dup[field] = typo(rng, dup[field]) if rng.random() < 0.7 else ""
            ids.append(f"p{p}-{d + 1}")
            records.append({"id": ids[-1], "traits": dup})
        matches += [(ids[0], other) for other in ids[1:]]
    rec_path, match_path = tmp_path / "records.jsonl", tmp_path / "matches.csv"
    rec_path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    match_path.write_text("id_a,id_b\n" + "".join(f"{a},{b}\n" for a, b in matches), encoding="utf-8")
    return rec_path, match_path


@pytest.mark.parametrize("method", ["labelled", "em"])
def test_estimation_writes_a_weights_file_the_config_accepts(tmp_path: Path, method: str) -> None:
    records, matches = sample(tmp_path)
    out = tmp_path / "weights.yaml"
    argv = [method, "--records", str(records), "--out", str(out), "--u-pairs", "1500"]
    est = run([*argv, "--matches", str(matches)] if method == "labelled" else argv)
    written = yaml.safe_load(out.read_text())
    assert written["method"] == method and written["pairs"] == est.pairs > 0
    fields = written["fields"]
    assert "email" not in fields  # never observed: the configured priors stay
    for name in ("first_name", "last_name", "dob", "zip"):
        m, u, w = fields[name]["m"], fields[name]["u"], fields[name]["weights"]
        assert sum(m) == pytest.approx(1, abs=1e-4) and sum(u) == pytest.approx(1, abs=1e-4)
        assert w[0] > 3 and w[-1] < 0, f"{name}: agreement must weigh for, disagreement against a match"
    if method == "labelled":
        assert written["suggested_upper_threshold"] > 0
    # identity.yaml can point at the file: its m/u replace the inline ones
    conf = yaml.safe_load(IDENTITY_CONFIG_PATH.read_text())
    conf["matching"]["weights_file"] = str(out)
    conf_path = tmp_path / "identity.yaml"
    conf_path.write_text(yaml.safe_dump(conf))
    loaded = load_identity_config(conf_path).matching.fields
    assert list(loaded["dob"].m) == fields["dob"]["m"]
    assert loaded["email"].m == load_identity_config().matching.fields["email"].m


def test_em_and_labelled_agree_on_the_sample(tmp_path: Path) -> None:
    records, matches = sample(tmp_path, people=200, seed=3)
    em = run(["em", "--records", str(records), "--out", str(tmp_path / "a.yaml"), "--u-pairs", "1500"])
    lab = run(["labelled", "--records", str(records), "--matches", str(matches),
               "--out", str(tmp_path / "b.yaml"), "--u-pairs", "1500"])
    for name in ("first_name", "last_name", "dob"):
        assert em.m[name][0] == pytest.approx(lab.m[name][0], abs=0.1)


def test_labelled_needs_matches(tmp_path: Path) -> None:
    records, _ = sample(tmp_path, people=5)
    with pytest.raises(SystemExit):
        run(["labelled", "--records", str(records), "--out", str(tmp_path / "w.yaml")])
