"""The Internet checksum against published vectors: RFC 1071's worked example and a
real IPv4 header whose checksum field is known."""

from __future__ import annotations

from anyedge.proto.inet import checksum


def test_rfc_1071_example() -> None:
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (with the carries)
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2


def test_an_ipv4_header_checks_to_zero_with_its_checksum_in_place() -> None:
    # a widely used example header (Wikipedia, "Internet checksum"): checksum b861
    head = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert checksum(head) == 0xB861
    with_sum = head[:10] + (0xB861).to_bytes(2, "big") + head[12:]
    assert checksum(with_sum) == 0


def test_an_odd_length_is_padded_with_zero() -> None:
    assert checksum(b"\x01") == checksum(b"\x01\x00") == 0xFEFF
