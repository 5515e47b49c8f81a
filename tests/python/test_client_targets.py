"""The address and trust rule of `tensorgate.Client` is the client
library's (`tensorgate_client::trust_per_address`, also used by the
`tensorgate` command line): one fingerprint for all addresses or one per
address, a CA file instead, never both. Refused settings fail before any
connection is tried, so no host is needed here."""

import pytest

import tensorgate

TWO = "127.0.0.1:9,127.0.0.1:10"
FP = "ab" * 32


@pytest.fixture(autouse=True)
def no_trust_in_environment(monkeypatch):
    for var in ("TENSORGATE_FINGERPRINT", "TENSORGATE_CA"):
        monkeypatch.delenv(var, raising=False)


def test_fingerprints_must_be_one_for_all_or_one_per_address():
    with pytest.raises(ValueError, match="3 fingerprints for 2 addresses: give one per address, or one for all"):
        tensorgate.Client(TWO, fingerprint=[FP, FP, FP])


def test_a_fingerprint_and_a_ca_file_are_refused_together(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        tensorgate.Client(TWO, fingerprint=FP, ca=tmp_path / "ca.pem")


def test_no_trust_at_all_is_refused_naming_the_fingerprint():
    with pytest.raises(ValueError, match=r"give fingerprint= \(printed by tensorgate-host\) or ca="):
        tensorgate.Client(TWO)


def test_no_address_is_refused():
    with pytest.raises(ValueError, match="no host address given"):
        tensorgate.Client(" , ", fingerprint=FP)
