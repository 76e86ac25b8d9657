"""GlobalPlatform data objects a Security Domain answers to GET DATA (``gpdata.objects``)."""

from __future__ import annotations

from .objects import (
    CPLC_LENGTH,
    DataTag,
    KeyComponent,
    KeyInfo,
    card_recognition_data,
    encode_key_information,
    parse_cplc,
    parse_key_information,
    sd_cplc,
    sd_key_information,
)

__all__ = [
    "CPLC_LENGTH",
    "DataTag",
    "KeyComponent",
    "KeyInfo",
    "card_recognition_data",
    "encode_key_information",
    "parse_cplc",
    "parse_key_information",
    "sd_cplc",
    "sd_key_information",
]
