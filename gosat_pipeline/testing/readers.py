"""Reusable contract tests for granule readers, for built-in readers and plug-ins alike.

Modelled on xarray's ``DatasetIOBase``: a reader's test module subclasses
:class:`ReaderContractTests`, names the reader and the gas, and says how to write a
sample file from canonical soundings; pytest then runs the whole contract on it:

- round trip: the file written from known soundings reads back as the same values
  in the canonical schema (units, surface-first levels, longitude range, dtypes);
- the product screen keeps exactly the good soundings;
- laziness: opening runs no dask computation, every variable is a dask array;
- format detection, by file name and (after a rename) by content;
- bad input: a zero-byte file, a truncated file, a file without a required
  variable and an all-fill file each raise a :class:`~gosat_pipeline.errors.GranuleError`
  naming the file (and the variable).

This module needs pytest (``pip install gosat_pipeline[test]``); it is not imported by
``gosat_pipeline.testing`` itself.

Examples
--------
A plug-in's ``tests/test_my_reader.py``::

    from gosat_pipeline.testing.readers import ReaderContractTests

    class TestMyXco2(ReaderContractTests):
        reader = "my_xco2"
        gas = "CO2"
        required_variable = "xco2_err"

        def write_sample(self, source, directory):
            path = directory / "MY-L2-XCO2-20210304.nc"
            ...  # write `source` (canonical soundings) in the product's layout
            return path

The built-in readers use :class:`BuiltinReaderContract`, which writes the sample with
:func:`gosat_pipeline.testing.granules.write_granule` and takes the per-format facts
from :data:`BUILTIN_READER_FACTS`.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import dask
import dask.array as da
import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr

from gosat_pipeline.errors import GranuleError
from gosat_pipeline.io import (
    GranuleReader,
    close_cached,
    detect_format,
    get_reader,
    open_granule,
    register_reader,
    unregister_reader,
)
from gosat_pipeline.schema import LEVEL_VARIABLES, gas_units, validate_soundings
from gosat_pipeline.testing.granules import granule_filename, granule_soundings, write_granule
from gosat_pipeline.testing.soundings import make_soundings

__all__ = [
    "ReaderContractTests",
    "BuiltinReaderContract",
    "ReaderFacts",
    "BUILTIN_READER_FACTS",
    "CONTRACT_SCALARS",
    "rename_variable",
]

#: Per-sounding canonical variables the round trip compares (with the level variables).
CONTRACT_SCALARS: tuple[str, ...] = (
    "xgas",
    "xgas_uncertainty",
    "xgas_apriori",
    "latitude",
    "longitude",
    "quality_flag",
    "surface_type",
    "surface_pressure",
    "solar_zenith_angle",
)


def _raise_on_compute(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    raise AssertionError("a dask computation ran while opening (must be lazy)")


def rename_variable(path: str | Path, vpath: str, suffix: str = "_renamed") -> None:
    """Rename variable ``vpath`` of a file in place (HDF5 through h5py, netCDF-3 through netCDF4).

    Closes the package's cached handle of the file first.
    """
    close_cached(str(path))
    if h5py.is_hdf5(path):
        with h5py.File(path, "a") as f:
            f.move(vpath, vpath + suffix)
        return
    with netCDF4.Dataset(path, "a") as nc:
        group, _, name = vpath.rpartition("/")
        (nc[group] if group else nc).renameVariable(name, name + suffix)


class ReaderContractTests:
    """Base class of a reader's contract tests (pytest collects the subclasses named ``Test*``).

    Attributes
    ----------
    reader : str
        Registered reader name (:func:`gosat_pipeline.io.list_formats`).
    reader_class : GranuleReader subclass, optional
        Registered (with the contract checks) for the class's tests and removed after,
        for a plug-in tested before it is installed with its entry point.
    gas : {"CO2", "CH4"}
    n_soundings : int
        Soundings in the sample file.
    required_variable : str
        Path of a file variable the reader requires; the missing-variable test renames it
        and expects its name in the error. Empty: that test is skipped.
    not_in_product : frozenset of str
        Canonical variables the product does not hold (the reader must not make them up).
    file_holds_screened_only : bool
        The product stores only soundings passing its own screen (flag 0).
    rtol, atol : float
        Tolerances of the value round trip (file precision, e.g. float32).
    time_tolerance_ns : int
        Largest time difference allowed (coarsest time encoding of the product).
    truncated_message : str
        What the error of a truncated file says (the package's file handles say
        ``"truncated or corrupt"``); empty: only the file name is checked.

    Subclasses implement :meth:`write_sample` and may override :meth:`sample_soundings`.
    """

    reader: ClassVar[str] = ""
    gas: ClassVar[str] = ""
    reader_class: ClassVar[type[GranuleReader] | None] = None
    n_soundings: ClassVar[int] = 60
    required_variable: ClassVar[str] = ""
    not_in_product: ClassVar[frozenset[str]] = frozenset()
    file_holds_screened_only: ClassVar[bool] = False
    rtol: ClassVar[float] = 3e-6
    atol: ClassVar[float] = 2e-4
    time_tolerance_ns: ClassVar[int] = 1_000_000
    truncated_message: ClassVar[str] = "truncated or corrupt"

    # -- what a subclass provides ------------------------------------------------------------
    def sample_soundings(self) -> xr.Dataset:
        """Canonical soundings to write (default: :func:`~gosat_pipeline.testing.make_soundings`)."""
        return make_soundings(self.n_soundings, self.gas, seed=11)

    def write_sample(self, source: xr.Dataset, directory: Path) -> Path:
        """Write ``source`` in the product's layout under ``directory``; return the file's path."""
        raise NotImplementedError(f"{type(self).__name__} must implement write_sample(source, directory)")

    def expected(self, source: xr.Dataset) -> xr.Dataset:
        """The soundings the file holds (what ``open_granule(path, screen=False)`` returns)."""
        if self.file_holds_screened_only:
            return source.isel(sounding=np.flatnonzero(source.quality_flag.values == 0))
        return source

    # -- fixtures ------------------------------------------------------------------------------
    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _registered(cls) -> Iterator[None]:
        """Register :attr:`reader_class` for the class's tests (when given)."""
        if cls.reader_class is None:
            yield
            return
        register_reader(cls.reader_class)
        try:
            yield
        finally:
            unregister_reader(cls.reader_class.name)

    @pytest.fixture(scope="class")
    @classmethod
    def sample(cls, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, xr.Dataset]:
        """(path, source soundings) of the sample file, written once per class."""
        self = cls()
        src = self.sample_soundings()
        return self.write_sample(src, tmp_path_factory.mktemp(cls.reader or "reader")), src

    def _fresh(self, directory: Path, source: xr.Dataset | None = None) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        return self.write_sample(self.sample_soundings() if source is None else source, directory)

    # -- the contract ------------------------------------------------------------------------
    def test_reader_is_registered_and_valid(self) -> None:
        reader = get_reader(self.reader)
        assert self.gas in reader.gases
        reader.check_definition()
        register_reader(reader, overwrite=True)  # the registration checks pass

    def test_round_trip_values(self, sample: tuple[Path, xr.Dataset]) -> None:
        path, src = sample
        ds = open_granule(path, screen=False).compute()
        src = self.expected(src)
        assert ds.sizes["sounding"] == src.sizes["sounding"]
        for name in [*CONTRACT_SCALARS, *LEVEL_VARIABLES]:
            if name in self.not_in_product:
                assert name not in ds, name
                continue
            if name not in src:  # the sample does not hold it (plug-in samples may be leaner)
                continue
            assert name in ds, f"{self.reader} does not return {name!r}, which the sample file holds"
            np.testing.assert_allclose(
                ds[name].values.astype(float),
                src[name].values.astype(float),
                rtol=self.rtol,
                atol=self.atol,
                err_msg=f"{self.reader} {name}",
            )
        dt = np.abs((ds.time.values - src.time.values).astype("timedelta64[ns]").astype(np.int64))
        assert dt.max() <= self.time_tolerance_ns
        assert ds.attrs["gas"] == self.gas and ds.attrs["reader"] == self.reader
        assert set(ds.source_file.values) == {str(path)}

    def test_schema_units_and_surface_first(self, sample: tuple[Path, xr.Dataset]) -> None:
        path, _ = sample
        ds = open_granule(path, screen=False)
        validate_soundings(ds)
        assert ds.xgas.attrs["units"] == gas_units(self.gas)
        assert ds.time.dtype == np.dtype("datetime64[ns]")
        assert ds.quality_flag.dtype == np.int8
        p = ds.pressure.values
        assert np.all(p[:, 0] > p[:, -1]), "pressure must decrease from the surface (index 0) upwards"
        lon = ds.longitude.values
        assert np.all((lon >= -180) & (lon < 180))
        np.testing.assert_allclose(ds.pressure_weight.values.sum(axis=1), 1.0, rtol=1e-5)

    def test_screen_keeps_only_good(self, sample: tuple[Path, xr.Dataset]) -> None:
        path, src = sample
        ds = open_granule(path)
        assert ds.sizes["sounding"] == int((src.quality_flag.values == 0).sum())
        assert (ds.quality_flag.values == 0).all()

    def test_lazy(self, sample: tuple[Path, xr.Dataset]) -> None:
        path, _ = sample
        with dask.config.set(scheduler=_raise_on_compute):
            ds = open_granule(path)
        for name in ds.variables:
            assert isinstance(ds[name].data, da.Array), name

    def test_detect_by_name_and_content(self, sample: tuple[Path, xr.Dataset], tmp_path: Path) -> None:
        path, _ = sample
        assert detect_format(path) == self.reader
        anon = tmp_path / ("renamed" + path.suffix)
        shutil.copy(path, anon)
        assert detect_format(anon) == self.reader
        assert open_granule(anon, format=self.reader).attrs["reader"] == self.reader

    # -- bad input -----------------------------------------------------------------------------
    def _raises_naming(self, path: Path, *fragments: str) -> GranuleError:
        with pytest.raises(GranuleError) as info:
            open_granule(path, format=self.reader)
        exc = info.value
        assert exc.path == str(path) and str(path) in str(exc)
        for frag in fragments:
            assert frag in str(exc), (frag, str(exc))
        return exc

    def test_bad_input_zero_byte(self, sample: tuple[Path, xr.Dataset], tmp_path: Path) -> None:
        path = tmp_path / sample[0].name
        path.touch()
        self._raises_naming(path, "zero-byte")

    def test_bad_input_truncated(self, sample: tuple[Path, xr.Dataset], tmp_path: Path) -> None:
        path = tmp_path / sample[0].name
        data = sample[0].read_bytes()
        path.write_bytes(data[: int(len(data) * 0.6)])  # an interrupted download
        self._raises_naming(path, *([self.truncated_message] if self.truncated_message else []))

    def test_bad_input_missing_required_variable(self, tmp_path: Path) -> None:
        if not self.required_variable:
            pytest.skip(f"{type(self).__name__} names no required_variable")
        path = self._fresh(tmp_path)
        rename_variable(path, self.required_variable)
        self._raises_naming(path, "missing variable", self.required_variable)

    def test_bad_input_all_fill(self, tmp_path: Path) -> None:
        src = self.sample_soundings()
        src["xgas"][:] = np.nan  # the writer stores the product's fill value
        self._raises_naming(self._fresh(tmp_path, src), "fill values")


# ------------------------------------------------------------------------------ built-in readers
@dataclass(frozen=True)
class ReaderFacts:
    """What the bad-input tests need to know of a built-in product's file layout.

    Paths may hold ``{g}`` (gas, lower case) and ``{G}`` (upper case): :meth:`for_gas`
    fills them in.

    Attributes
    ----------
    gas_variables : tuple of str
        File variables holding the gas value: the bias-corrected one first, then its raw twin.
    uncertainty_variable : str
        File variable of the gas uncertainty (NIES GOSAT: one of its components).
    required_variable : str
        The variable whose absence the missing-variable tests provoke (default: the uncertainty).
    time_variable : str or None
        Numeric time variable with CF units, None when the product has none.
    not_in_product : frozenset of str
        Canonical variables the product does not hold.
    file_holds_screened_only : bool
        The product stores only the soundings passing its own screen.
    netcdf : bool
        The file is netCDF (read by netCDF4 as well as h5py); False for plain HDF5.
    """

    gas_variables: tuple[str, ...]
    uncertainty_variable: str
    required_variable: str = ""
    time_variable: str | None = "time"
    not_in_product: frozenset[str] = frozenset()
    file_holds_screened_only: bool = False
    netcdf: bool = True

    @property
    def missing_variable(self) -> str:
        """The variable the missing-variable tests rename."""
        return self.required_variable or self.uncertainty_variable

    def for_gas(self, gas: str) -> ReaderFacts:
        """The facts of the file holding ``gas`` (``{g}``/``{G}`` filled in)."""

        def fill(text: str | None) -> str | None:
            return None if text is None else text.format(g=gas.lower(), G=gas.upper())

        return dataclasses.replace(
            self,
            gas_variables=tuple(fill(v) or "" for v in self.gas_variables),
            uncertainty_variable=fill(self.uncertainty_variable) or "",
            required_variable=fill(self.required_variable) or "",
            time_variable=fill(self.time_variable),
        )


def _lite() -> ReaderFacts:
    return ReaderFacts(("xco2", "Retrieval/xco2_raw"), "xco2_uncertainty")


#: Built-in reader -> facts of the files :func:`~gosat_pipeline.testing.granules.write_granule` writes.
BUILTIN_READER_FACTS: dict[str, ReaderFacts] = {
    "cci_ocpr": ReaderFacts(("xch4", "raw_xch4"), "xch4_uncertainty"),
    "cci_ocfp": ReaderFacts(("xco2", "raw_xco2"), "xco2_uncertainty"),
    "cci_srfp": ReaderFacts(("x{g}", "raw_x{g}"), "x{g}_uncertainty"),
    "acos_lite": _lite(),
    "oco2_lite": _lite(),
    "oco3_lite": _lite(),
    # V02.80: no bias-corrected value; the uncertainty is built from components of which any
    # one may be absent, so the missing-variable case takes the latitude
    "nies_gosat_l2": ReaderFacts(
        ("Data/mixingRatio/X{G}",),
        "Data/mixingRatio/X{G}RetrievalNoise",
        required_variable="Data/geolocation/latitude",
        time_variable=None,
        file_holds_screened_only=True,
        netcdf=False,
    ),
    "nies_gosat2_l2": ReaderFacts(
        ("RetrievalResult/x{g}",), "RetrievalResult/x{g}_uncertainty", time_variable=None, netcdf=False
    ),
    "tropomi_ch4": ReaderFacts(
        ("PRODUCT/methane_mixing_ratio_bias_corrected", "PRODUCT/methane_mixing_ratio"),
        "PRODUCT/methane_mixing_ratio_precision",
        time_variable="PRODUCT/time",
    ),
    # times are ISO strings only (time_utc); no solar zenith angle in the product
    "tropomi_blended_ch4": ReaderFacts(
        ("methane_mixing_ratio_blended", "methane_mixing_ratio"),
        "methane_mixing_ratio_precision",
        time_variable=None,
        not_in_product=frozenset({"solar_zenith_angle"}),
    ),
}


class BuiltinReaderContract(ReaderContractTests):
    """Contract tests of a built-in reader: samples from :mod:`gosat_pipeline.testing.granules`.

    A subclass sets ``reader`` and ``gas``; the facts come from :data:`BUILTIN_READER_FACTS`.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        facts = BUILTIN_READER_FACTS.get(cls.reader)
        if facts is not None and cls.gas:
            facts = facts.for_gas(cls.gas)
            cls.required_variable = cls.__dict__.get("required_variable") or facts.missing_variable
            cls.not_in_product = facts.not_in_product
            cls.file_holds_screened_only = facts.file_holds_screened_only

    def sample_soundings(self) -> xr.Dataset:
        """Soundings of the product's kind, worldwide, on 2021-03-04."""
        return granule_soundings(
            self.reader, self.n_soundings, self.gas, seed=11, bbox=(-179.9, -80, 179.9, 80), start="2021-03-04"
        )

    def write_sample(self, source: xr.Dataset, directory: Path) -> Path:
        """The product's real layout and file name (:func:`~gosat_pipeline.testing.granules.write_granule`)."""
        name = granule_filename(self.reader, "2021-03-04", gas=self.gas)
        return write_granule(source, directory / self.gas / name, self.reader)
