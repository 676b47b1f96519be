"""Every built-in reader against the reader contract (:mod:`gosat_pipeline.testing.readers`).

Each class runs the round trip, schema, screen, laziness, detection and bad-input tests on
a file written in the product's real layout; the facts per product are in
``BUILTIN_READER_FACTS``. A new built-in format adds its writer to
``gosat_pipeline/testing/granules.py``, one ``ReaderFacts`` row and one class here.
"""

from __future__ import annotations

from gosat_pipeline.testing.granules import GRANULE_FORMATS
from gosat_pipeline.testing.readers import BUILTIN_READER_FACTS, BuiltinReaderContract


class TestCciOcprCH4(BuiltinReaderContract):
    reader, gas = "cci_ocpr", "CH4"


class TestCciOcfpCO2(BuiltinReaderContract):
    reader, gas = "cci_ocfp", "CO2"


class TestCciSrfpCO2(BuiltinReaderContract):
    reader, gas = "cci_srfp", "CO2"


class TestCciSrfpCH4(BuiltinReaderContract):
    reader, gas = "cci_srfp", "CH4"


class TestAcosLiteCO2(BuiltinReaderContract):
    reader, gas = "acos_lite", "CO2"


class TestOco2LiteCO2(BuiltinReaderContract):
    reader, gas = "oco2_lite", "CO2"


class TestOco3LiteCO2(BuiltinReaderContract):
    reader, gas = "oco3_lite", "CO2"


class TestNiesGosatCO2(BuiltinReaderContract):
    reader, gas = "nies_gosat_l2", "CO2"


class TestNiesGosatCH4(BuiltinReaderContract):
    reader, gas = "nies_gosat_l2", "CH4"


class TestNiesGosat2CO2(BuiltinReaderContract):
    reader, gas = "nies_gosat2_l2", "CO2"


class TestNiesGosat2CH4(BuiltinReaderContract):
    reader, gas = "nies_gosat2_l2", "CH4"


class TestTropomiCH4(BuiltinReaderContract):
    reader, gas = "tropomi_ch4", "CH4"


class TestTropomiBlendedCH4(BuiltinReaderContract):
    reader, gas = "tropomi_blended_ch4", "CH4"


def test_every_builtin_format_and_gas_has_a_contract_class() -> None:
    covered = {(c.reader, c.gas) for c in BuiltinReaderContract.__subclasses__()}
    assert covered == {(f, g) for f, (_, _, gases) in GRANULE_FORMATS.items() for g in gases}
    assert set(BUILTIN_READER_FACTS) == set(GRANULE_FORMATS)
