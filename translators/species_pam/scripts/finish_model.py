"""Finish a rare-species model: clear pixels where the ecoregions raster has no data, compress.

create_rare_species_model takes the ecoregions' nodata value for one more ecoregion, so a point on
a nodata pixel (a coastal record falling on the sea) makes all the sea inside its hull present.
It also writes the model uncompressed. Arguments: raw model, ecoregions raster, model to write.
"""

import sys

from osgeo import gdal


def finish(raw_path, ecoregions_path, model_path):
    gdal.UseExceptions()
    # Keep each dataset in a name: a band whose dataset is collected crashes GDAL's bindings.
    raw = gdal.Open(raw_path)
    model = gdal.GetDriverByName("MEM").CreateCopy("", raw)
    band = model.GetRasterBand(1)
    data = band.ReadAsArray()
    regions = gdal.Open(ecoregions_path)
    nodata = regions.GetRasterBand(1).GetNoDataValue()
    if nodata is not None:
        data[regions.GetRasterBand(1).ReadAsArray() == nodata] = 0
        band.WriteArray(data)
    gdal.GetDriverByName("GTiff").CreateCopy(
        model_path, model, options=["COMPRESS=DEFLATE", "PREDICTOR=2", "TILED=YES"]
    )


if __name__ == "__main__":
    finish(*sys.argv[1:4])
