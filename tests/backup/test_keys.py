"""Key slots and sealing."""

from __future__ import annotations

import json

import pytest

from amber.backup.crypto import AesGcmSealer, ObjectKind, PlainSealer
from amber.backup.keys import (
    KeyFile,
    Password,
    ScryptParams,
    make_key_slot,
    parse_key_slot,
    try_unwrap,
    unlock_master_key,
)
from amber.domain.errors import Corrupt, InvalidArgument, PermissionDenied
from tests.backup.helpers import FAST_SCRYPT
from tests.backup.memstore import FakeClock, MemStore

MASTER = bytes(range(32))
REPO_ID = "a" * 32


def slot(credentials: Password | KeyFile, repository_id: str = REPO_ID) -> bytes:
    return make_key_slot(MASTER, credentials, repository_id, created=0.0, scrypt=FAST_SCRYPT)


def test_a_slot_opens_only_with_its_credentials_and_repository() -> None:
    parsed = parse_key_slot("s", slot(Password("pw")))
    assert try_unwrap(parsed, Password("pw"), REPO_ID) == MASTER
    assert try_unwrap(parsed, Password("pW"), REPO_ID) is None
    assert try_unwrap(parsed, Password("pw"), "b" * 32) is None  # copied from another repository
    assert try_unwrap(parsed, KeyFile(b"x" * 32), REPO_ID) is None


def test_passwords_are_unicode_normalized() -> None:
    parsed = parse_key_slot("s", slot(Password("caf\u00e9")))
    assert try_unwrap(parsed, Password("cafe\u0301"), REPO_ID) == MASTER


def test_slots_store_their_kdf_parameters_and_no_secret() -> None:
    document = json.loads(slot(Password("hunter2-secret")))
    assert document["kdf"]["name"] == "scrypt"
    assert (document["kdf"]["n"], document["kdf"]["r"], document["kdf"]["p"]) == (1024, 8, 1)
    assert b"hunter2" not in slot(Password("hunter2-secret"))
    assert json.loads(slot(KeyFile(b"k" * 32)))["kdf"]["name"] == "hkdf-sha256"


def test_hostile_scrypt_parameters_are_refused() -> None:
    document = json.loads(slot(Password("pw")))
    del document["checksum"]  # as a slot written before checksums: the bounds still hold
    document["kdf"]["n"] = 2**30
    with pytest.raises(Corrupt, match="scrypt N"):
        try_unwrap(parse_key_slot("s", json.dumps(document).encode()), Password("pw"), REPO_ID)
    with pytest.raises(Corrupt):
        ScryptParams(n=1000).validate("new slot")


def test_unlock_skips_unreadable_slots() -> None:
    store = MemStore(FakeClock())
    store.put("keys/" + "1" * 32, b"not json")
    store.put("keys/" + "2" * 32, slot(Password("pw")))
    assert unlock_master_key(store, Password("pw"), REPO_ID)[0] == MASTER
    # the damaged slot may have been this password's: damage, not a wrong password
    with pytest.raises(Corrupt, match=r"1 key slot\(s\) are damaged.*1 readable password"):
        unlock_master_key(store, Password("nope"), REPO_ID)


def test_a_wrong_password_is_permission_denied() -> None:
    store = MemStore(FakeClock())
    store.put("keys/" + "2" * 32, slot(Password("pw")))
    with pytest.raises(PermissionDenied, match="1 password key slot"):
        unlock_master_key(store, Password("nope"), REPO_ID)


@pytest.mark.parametrize("field", ["wrapped", "salt", "label"])
def test_a_flipped_byte_in_a_slot_is_damage_not_a_wrong_password(field: str) -> None:
    store = MemStore(FakeClock())
    data = slot(Password("pw"))
    document = json.loads(data)
    value = document["kdf"]["salt"] if field == "salt" else document[field]
    flipped = ("B" if value[:1] != "B" else "C") + value[1:]
    data = data.replace(f'"{value}"'.encode(), f'"{flipped}"'.encode())
    store.put("keys/" + "2" * 32, data)
    with pytest.raises(Corrupt, match="checksum does not match"):
        unlock_master_key(store, Password("pw"), REPO_ID)


def test_a_repository_without_key_slots_is_damaged() -> None:
    store = MemStore(FakeClock())
    with pytest.raises(Corrupt, match="no key slot at all"):
        unlock_master_key(store, Password("pw"), REPO_ID)


def test_short_key_files_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="32 bytes"):
        KeyFile(b"  short  ")


def test_secrets_are_not_printed() -> None:
    assert "pw-secret" not in repr(Password("pw-secret"))
    assert "kkkk" not in repr(KeyFile(b"k" * 40))


@pytest.mark.parametrize("sealer", [AesGcmSealer(bytes(32)), PlainSealer(bytes(32))])
def test_sealing_binds_kind_and_context(sealer: AesGcmSealer | PlainSealer) -> None:
    sealed = sealer.seal(ObjectKind.MANIFEST, b"payload", context=b"id-1")
    assert len(sealed) == len(b"payload") + sealer.overhead
    assert sealer.open(ObjectKind.MANIFEST, sealed, "x", context=b"id-1") == b"payload"
    with pytest.raises(Corrupt, match="not a lock object"):
        sealer.open(ObjectKind.LOCK, sealed, "x", context=b"id-1")
    with pytest.raises(Corrupt):
        sealer.open(ObjectKind.MANIFEST, sealed, "x", context=b"id-2")
    with pytest.raises(Corrupt, match="truncated"):
        sealer.open(ObjectKind.MANIFEST, sealed[:3], "x", context=b"id-1")


def test_aes_gcm_nonces_are_fresh() -> None:
    sealer = AesGcmSealer(bytes(32))
    first = sealer.seal(ObjectKind.BLOB, b"same")
    second = sealer.seal(ObjectKind.BLOB, b"same")
    assert first[:12] != second[:12]
    assert first != second
