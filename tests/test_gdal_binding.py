"""The GDAL binding loads with the virtualenv's numpy and moves rasters through GeoTIFF intact."""

import numpy as np
import pytest
from osgeo import gdal, gdal_array, osr

GEOTRANSFORM = (-120.0, 0.5, 0.0, 50.0, 0.0, -0.5)


@pytest.fixture(autouse=True)
def _gdal_raises():
    was = gdal.GetUseExceptions()
    gdal.UseExceptions()
    yield
    if not was:
        gdal.DontUseExceptions()


def _write_geotiff(path, array: np.ndarray, *, nodata) -> None:
    bands, rows, cols = array.shape
    gdal_type = gdal_array.NumericTypeCodeToGDALTypeCode(array.dtype)
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), cols, rows, bands, gdal_type)
    dataset.SetGeoTransform(GEOTRANSFORM)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    dataset.SetProjection(srs.ExportToWkt())
    for index in range(bands):
        band = dataset.GetRasterBand(index + 1)
        band.SetNoDataValue(nodata)
        band.WriteArray(array[index])
    dataset.FlushCache()
    dataset = None


# Every type the workflows' rasters use: ecoregion codes, counts, environment layers.
@pytest.mark.parametrize(
    ("dtype", "nodata"),
    [("uint8", 255), ("int16", -9999), ("int32", -9999), ("float32", -9999.0), ("float64", -1e30)],
)
def test_an_array_comes_back_from_a_geotiff_unchanged(tmp_path, dtype, nodata):
    rng = np.random.default_rng(12)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        array = rng.integers(info.min, info.max, size=(3, 17, 23), dtype=dtype, endpoint=False)
    else:
        array = rng.normal(scale=1e3, size=(3, 17, 23)).astype(dtype)
    array[:, 0, 0] = nodata
    path = tmp_path / "layer.tif"

    _write_geotiff(path, array, nodata=nodata)
    back = gdal_array.LoadFile(str(path))

    assert back.dtype == np.dtype(dtype)
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    dataset = gdal.Open(str(path))
    assert dataset.GetGeoTransform() == GEOTRANSFORM
    assert dataset.GetRasterBand(1).GetNoDataValue() == nodata
    assert "WGS 84" in dataset.GetProjection()


def test_a_window_of_a_geotiff_reads_as_that_slice_of_the_array(tmp_path):
    array = np.arange(40 * 30, dtype="int32").reshape(1, 40, 30)
    path = tmp_path / "grid.tif"
    _write_geotiff(path, array, nodata=-1)

    window = gdal_array.LoadFile(str(path), xoff=5, yoff=7, xsize=11, ysize=13)

    np.testing.assert_array_equal(window, array[0, 7:20, 5:16])


def test_an_in_memory_array_opens_as_a_dataset_and_writes_back_to_numpy():
    array = np.linspace(0.0, 1.0, 6 * 9, dtype="float32").reshape(6, 9)

    dataset = gdal_array.OpenArray(array)

    assert (dataset.RasterXSize, dataset.RasterYSize) == (9, 6)
    np.testing.assert_array_equal(dataset.ReadAsArray(), array)
