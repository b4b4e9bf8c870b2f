"""A synthetic, deterministic multi-instrument survey archive imitating Euclid MER tiles.

``build_demo_archive(root, scale=1, seed=42)`` writes (tile side 0.05 deg x scale)::

    <root>/README.txt                       this layout, with the numbers of the build
    <root>/sources.csv                      the sky catalog: id, ra, dec (ICRS deg), field, type,
                                            variable, r_half_arcsec, mag_<band> (AB) per band
    <root>/euclid/TILE<tile>/EUC_MER_<PRODUCT>-MOSAIC-<BAND>_TILE<tile>.fits
        tiles 102018211, 102018212, 102018213: three adjacent tiles in a row in EDF-FORNAX
        (RA 52.93, Dec -28.09), overlapping by 10 %; tile 102018213 is tile-compressed
        (empty primary HDU, RICE_1 CompImageHDU in extension 1; FLAG losslessly).
        tile 102159190: one tile straddling RA = 0 (CRVAL1 = 0, pixels on both sides).
        PRODUCT: BGSUB (science, background subtracted, float32 uJy), RMS (float32 uJy),
        FLAG (int32 bit mask, bits in MASK_<n> keywords), BGMOD (float32 uJy, the subtracted
        background); BAND: VIS (VIS, 0.2"/pix), NIR-Y NIR-J NIR-H (NISP, 0.4"/pix),
        DES-G DES-R DES-I DES-Z (DECAM, 0.3"/pix), same sky footprint in every band. The PSF
        of a tile's images widens by 25 % toward its north-west corner and narrows by 25 %
        toward the south-east one (vo_service/archive/demo_products.py).
    <root>/euclid/TILE<tile>/EUC_MER_CATALOG-PSF-<BAND>_TILE<tile>.fits
        per tile and band, the PSF model in Euclid MER's CATALOG-PSF layout: a PSFIMAGE of
        6 x 6 PSF stamps (STMPSIZE pixels each, unit sum: PSFNORM 'SUM') and a PSFCAT table
        of their RA, DEC, x, y (on the tile) and x_center, y_center (in PSFIMAGE); each stamp
        is the PSF the images were rendered with at that position.
    <root>/euclid/TILE<tile>/EUC_MER_FINAL-CAT_TILE<tile>.fits
        per tile, the source catalog (PRODTYPE 'CATALOG'): the injected sources on the tile
        with OBJECT_ID, RIGHT_ASCENSION, DECLINATION, SOURCE_TYPE, R_HALF, FLUX_<BAND> (uJy)
        and MAG_<BAND> (AB).
    <root>/euclid/MEF/EUC_MER_MEF-MOSAIC-VIS_TILE102018299.fits
        one multi-extension file: empty primary + SCI (BGSUB), RMS, FLAG image HDUs, each with
        EXTNAME and PRODTYPE, covering the middle of tile 102018212.
    <root>/euclid/CUBE/EUC_MER_CUBE-MOSAIC-RGS_TILE102018211.fits
        a NISP-like slitless spectral cube (RA, Dec, WAVE): 60x60 x 40 channels over 1.2-1.9 um,
        CTYPE3 'WAVE', CUNIT3 'm', SPECSYS 'BARYCENT', PRODTYPE 'CUBE'; plain TAN (no SIP).
    <root>/euclid/EPOCHS/<YYYY-MM-DD>/EUC_MER_{BGSUB,RMS}-MOSAIC-VIS_TILE102020001.fits
        one field (EDF-FORNAX-VAR) seen at 20 epochs over ten months (distinct DATE-OBS,
        MJD-OBS, slightly dithered pointings), science and RMS images; the source with
        ``variable = 1`` in sources.csv varies as a sinusoid (mean VIS 20.5, amplitude
        0.6 mag, period 37.3 d) and an asteroid (VIS 19.8) crosses the field.
    <root>/variable.csv                     the injected light curve of the variable star:
                                            epoch, date_obs, mjd_mid, id, mag_VIS, flux_uJy
    <root>/asteroid.csv                     the asteroid's ephemeris, one row a day: mjd,
                                            ra, dec (ICRS deg), ra_rate (dRA cos Dec/dt),
                                            dec_rate (arcsec/hour)
    <root>/euclid/TRACTS/EUC_MER_<PRODUCT>-MOSAIC-VIS_TILE<tile>.fits
        tiles whose edges overlap, for stitched stamps (PRODUCT: BGSUB, RMS, FLAG): tiles
        102031001 and 102031002 are two patches of one pixel grid (the same tangent point,
        CRPIX shifted), tile 102032001 has its own tangent point and overlaps both from the
        north. Point sources with IDs from 300901 in sources.csv sit on the seams.

Every image HDU carries TELESCOP, INSTRUME, FILTER, PRODTYPE, TILEID, OBJECT, OBS_COLL
('EUCLID-DEMO'), DATE-OBS, MJD-OBS, MJD-END, EXPTIME, BUNIT, MAGZERO (23.9: images are in
microjansky per pixel) and a TAN-SIP WCS (CTYPE 'RA---TAN-SIP', SIP of a few tenths of a
pixel). All sources of the catalog are rendered through each image's own WCS (incl. SIP), so a
source sits on the same sky position in every band. The same seed gives byte-identical files
(no dates of writing, no checksums, a fixed dither seed for the compressed tile).
"""

from __future__ import annotations

import csv
import os
import time
import zlib
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from vo_service.archive import demo_epochs, demo_products, demo_seams
from vo_service.archive.demo_sky import (
    AB_ZERO_UJY,
    BAND_BY_NAME,
    BANDS,
    FLAG_BITS,
    Band,
    Catalog,
    band_images,
    make_catalog,
    noise_sigma,
    render,
    rng_for,
    sip_for,
    wcs_cards,
)

COLLECTION = "EUCLID-DEMO"
PRODUCTS = ("BGSUB", "RMS", "FLAG", "BGMOD")
TILE_DEG = 0.05  # tile side at scale 1
MAIN_FIELD = ("EDF-FORNAX", 52.93, -28.09)
RA0_FIELD = ("EQUATOR-RA0", 0.0, 1.2)
EPOCH_FIELD = ("EDF-FORNAX-VAR", 53.3, -27.85)
MAIN_TILES = (102018211, 102018212, 102018213)
COMPRESSED_TILE = 102018213
RA0_TILE = 102159190
MEF_TILE = 102018299
EPOCH_TILE = 102020001
CUBE_WAVE_M = (1.2e-6, 1.9e-6)
CUBE_CHANNELS = 40


def build_demo_archive(directory: Path, scale: int = 1, seed: int = 42) -> str:
    """Write the demo archive under ``directory`` and return a one-paragraph summary."""
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, not {scale}")
    started = time.perf_counter()
    root = Path(directory)
    side = TILE_DEG * scale
    step = side * 0.9  # adjacent tiles overlap by 10 %
    name, ra0, dec0 = MAIN_FIELD
    cos_dec = np.cos(np.radians(dec0))
    tile_centres = {tile: (ra0 + (i - 1) * step / cos_dec, dec0)
                    for i, tile in enumerate(MAIN_TILES)}
    main = make_catalog(seed, name, ra0, dec0, (2 * step + side, side), first_id=1)
    ra0_cat = make_catalog(seed, RA0_FIELD[0], RA0_FIELD[1], RA0_FIELD[2], (side, side),
                           first_id=100001)
    epoch_side = 0.02 * scale
    epoch_cat = make_catalog(seed, EPOCH_FIELD[0], EPOCH_FIELD[1], EPOCH_FIELD[2],
                             (epoch_side, epoch_side), first_id=200001)
    # The source nearest the field centre becomes a point-like variable of VIS mag 20.5.
    variable = int(np.argmin(np.hypot(epoch_cat.ra - EPOCH_FIELD[1],
                                      epoch_cat.dec - EPOCH_FIELD[2])))
    variable_id = int(epoch_cat.ids[variable])
    epoch_cat.mags[variable] = np.round(epoch_cat.mags[variable] - epoch_cat.mags[variable, 0]
                                        + 20.5, 3)
    epoch_cat.is_galaxy[variable], epoch_cat.r_half_arcsec[variable] = False, 0.0

    written: list[Path] = []
    for index, tile in enumerate(MAIN_TILES):
        written += _write_tile(root, seed, tile, tile_centres[tile], side, main, name, index,
                               compressed=tile == COMPRESSED_TILE)
    written += _write_tile(root, seed, RA0_TILE, RA0_FIELD[1:], side, ra0_cat, RA0_FIELD[0], 3)
    written.append(_write_mef(root, seed, tile_centres[MAIN_TILES[1]], 0.025 * scale, main))
    written.append(_write_cube(root, seed, tile_centres[MAIN_TILES[0]], scale, main))
    written += _write_epochs(root, seed, epoch_side, epoch_cat, variable_id)
    seams, seam_cat = demo_seams.seam_tiles(seed, scale)
    written += _write_seam_tiles(root, seams)
    _write_sources(root / "sources.csv", [(main, name), (ra0_cat, RA0_FIELD[0]),
                                          (epoch_cat, EPOCH_FIELD[0]),
                                          (seam_cat, demo_seams.SEAM_FIELD[0])], variable_id)
    total_bytes = sum(path.stat().st_size for path in written)
    hdus = sum(_count_image_hdus(path) for path in written)
    contents = (
        f"{len(written)} FITS files with {hdus} image HDUs, {total_bytes / 1e6:.1f} MB "
        f"(scale {scale}, seed {seed}): {len(MAIN_TILES) + 1} tiles x {len(BANDS)} bands x "
        f"{len(PRODUCTS)} products + a PSF grid per band and a source catalog per tile "
        f"(tile {COMPRESSED_TILE} RICE-compressed, tile {RA0_TILE} "
        f"straddling RA 0), one multi-extension file, one spectral cube, "
        f"{demo_epochs.EPOCH_COUNT} epochs (BGSUB + RMS) with a variable star and an "
        f"asteroid, 3 tiles with overlapping edges for stitching; "
        f"{len(main) + len(ra0_cat) + len(epoch_cat) + len(seam_cat)} sources in sources.csv"
    )
    # README.txt holds no build time, so that it too is identical between builds.
    _atomic_write_text(root / "README.txt", f"{__doc__}\nThis archive: {contents}.\n")
    seconds = time.perf_counter() - started
    return f"Demo archive in {root}: {contents}; built in {seconds:.1f} s; see README.txt."


def _common_cards(band: Band, product: str, tile: int, field: str, date_obs: str,
                  exptime: float) -> fits.Header:
    """The descriptive keywords every image HDU carries (see the module docstring)."""
    start = Time(date_obs, format="isot", scale="utc")
    header = fits.Header()
    header["TELESCOP"] = band.telescope
    header["INSTRUME"] = band.instrument
    header["FILTER"] = band.name
    header["PRODTYPE"] = (product, "BGSUB, RMS, FLAG, BGMOD or CUBE")
    header["TILEID"] = (tile, "survey tile identifier")
    header["OBJECT"] = field
    header["OBS_COLL"] = COLLECTION
    header["TIMESYS"] = "UTC"
    header["DATE-OBS"] = (start.isot, "start of the first exposure (UTC)")
    header["MJD-OBS"] = (round(start.mjd, 10), "[d] start of the first exposure")
    # Exposures are spread over four dithers: the last ends about 4 x EXPTIME later.
    end = Time(start.mjd + exptime * 4 / 86400.0, format="mjd", scale="utc", precision=3)
    header["DATE-END"] = (end.isot, "end of the last exposure (UTC)")
    header["MJD-END"] = (round(Time(end.isot, scale="utc").mjd, 10), "[d] end of the last one")
    header["EXPTIME"] = (exptime, "[s] total exposure time")
    if product == "FLAG":
        header["BUNIT"] = ("", "dimensionless bit mask")
        for bit, meaning in FLAG_BITS.items():
            header[f"MASK_{bit}"] = (meaning, f"meaning of flag value {bit}")
    else:
        header["BUNIT"] = ("uJy", "microjansky per pixel")
        header["MAGZERO"] = (AB_ZERO_UJY, "AB magnitude zero point")
    return header


def _date_for(band: Band, tile_index: int) -> str:
    """Observation start of a band: Euclid in 2024, the DES data years earlier."""
    base = "2024-03-14T02:11:09" if band.telescope == "Euclid" else "2017-10-21T04:52:33"
    band_index = BANDS.index(band) if band in BANDS else 2
    start = Time(base, format="isot", scale="utc")
    return Time(start.mjd + tile_index * 1.37 + band_index * 0.0131, format="mjd",
                scale="utc", precision=0).isot


def _band_cards(band: Band, centre: tuple[float, float], side_deg: float) -> fits.Header:
    """WCS cards (with NAXISn) of one band over a square footprint of ``side_deg``."""
    n = int(round(side_deg * 3600.0 / band.pixel_arcsec))
    cards = wcs_cards(centre[0], centre[1], band.pixel_arcsec / 3600.0, (n, n), sip_for(band))
    cards["NAXIS"] = 2
    cards["NAXIS1"] = n
    cards["NAXIS2"] = n
    return cards


def _image_header(common: fits.Header, wcs: fits.Header, extra: fits.Header) -> fits.Header:
    header = common.copy()
    header.update(extra)
    for card in wcs.cards:
        if not card.keyword.startswith("NAXIS"):
            header.append(card)
    return header


def _write_tile(root: Path, seed: int, tile: int, centre: tuple[float, float], side: float,
                catalog: Catalog, field: str, tile_index: int,
                compressed: bool = False) -> list[Path]:
    """All products of all bands of one tile."""
    folder = root / "euclid" / f"TILE{tile}"
    paths = []
    for band in BANDS:
        cards = _band_cards(band, centre, side)
        images, science_cards = band_images(seed, tile, band, cards, catalog,
                                            psf_gradient=demo_products.PSF_GRADIENT)
        paths.append(demo_products.write_psf_grid(
            folder / f"EUC_MER_CATALOG-PSF-{band.name}_TILE{tile}.fits", band, cards,
            demo_products.product_headers(tile, field, band, "CATALOG-PSF"), _write_fits))
        for product in PRODUCTS:
            common = _common_cards(band, product, tile, field, _date_for(band, tile_index),
                                   band.exptime)
            extra = science_cards if product == "BGSUB" else fits.Header()
            header = _image_header(common, cards, extra)
            path = folder / f"EUC_MER_{product}-MOSAIC-{band.name}_TILE{tile}.fits"
            if compressed:
                primary = fits.PrimaryHDU(header=_primary_cards(common))
                # An absolute quantization step (negative level): a noise-based one fails on
                # smooth rows, which then fall back to GZIP with a time stamp in its header.
                step = noise_sigma(band) / (16.0 if product == "BGSUB" else 1024.0)
                image = fits.CompImageHDU(
                    images[product], header, name=product, compression_type="RICE_1",
                    quantize_level=-step, dither_seed=1 + zlib.crc32(path.name.encode()) % 10000)
                _write_fits(path, fits.HDUList([primary, image]))
            else:
                _write_fits(path, fits.HDUList([fits.PrimaryHDU(images[product], header)]))
            paths.append(path)
    paths.append(demo_products.write_source_catalog(
        folder / f"EUC_MER_FINAL-CAT_TILE{tile}.fits", _band_cards(BANDS[0], centre, side),
        catalog, demo_products.product_headers(tile, field, None, "CATALOG"), _write_fits))
    return paths


def _write_seam_tiles(root: Path, seams: list[demo_seams.SeamTile]) -> list[Path]:
    """The VIS products of the tiles with overlapping edges (demo_seams.py)."""
    band = BAND_BY_NAME["VIS"]
    paths = []
    for seam in seams:
        for product, image in seam.images.items():
            common = _common_cards(band, product, seam.tile, demo_seams.SEAM_FIELD[0],
                                   _date_for(band, seam.tile_index), band.exptime)
            extra = seam.science_cards if product == "BGSUB" else fits.Header()
            path = (root / "euclid" / "TRACTS"
                    / f"EUC_MER_{product}-MOSAIC-{band.name}_TILE{seam.tile}.fits")
            _write_fits(path, fits.HDUList(
                [fits.PrimaryHDU(image, _image_header(common, seam.cards, extra))]))
            paths.append(path)
    return paths


def _primary_cards(common: fits.Header) -> fits.Header:
    """Descriptive keywords for an empty primary HDU (no PRODTYPE: it holds no image)."""
    keep = ("TELESCOP", "INSTRUME", "FILTER", "TILEID", "OBJECT", "OBS_COLL", "DATE-OBS",
            "MJD-OBS")
    return fits.Header([common.cards[key] for key in keep])


def _write_mef(root: Path, seed: int, centre: tuple[float, float], side: float,
               catalog: Catalog) -> Path:
    """One VIS file with SCI, RMS and FLAG extensions."""
    band = BAND_BY_NAME["VIS"]
    cards = _band_cards(band, centre, side)
    images, science_cards = band_images(seed, MEF_TILE, band, cards, catalog)
    date = _date_for(band, 5)
    hdus: list[fits.PrimaryHDU | fits.ImageHDU] = [
        fits.PrimaryHDU(header=_primary_cards(_common_cards(band, "BGSUB", MEF_TILE,
                                                            MAIN_FIELD[0], date, 1e3)))]
    for extname, product in (("SCI", "BGSUB"), ("RMS", "RMS"), ("FLAG", "FLAG")):
        extra = science_cards if product == "BGSUB" else fits.Header()
        common = _common_cards(band, product, MEF_TILE, MAIN_FIELD[0], date, band.exptime)
        hdus.append(fits.ImageHDU(images[product], _image_header(common, cards, extra),
                                  name=extname))
    path = root / "euclid" / "MEF" / f"EUC_MER_MEF-MOSAIC-VIS_TILE{MEF_TILE}.fits"
    _write_fits(path, fits.HDUList(hdus))
    return path


def _write_cube(root: Path, seed: int, near: tuple[float, float], scale: int,
                catalog: Catalog) -> Path:
    """A slitless-spectroscopy-like cube centred on a bright emission-line galaxy."""
    distance = np.hypot((catalog.ra - near[0]) * np.cos(np.radians(near[1])),
                        catalog.dec - near[1])
    candidates = (catalog.line_um > 0) & (catalog.mags[:, 0] < 22.0) & (distance < 0.015)
    target = np.flatnonzero(candidates)[0] if candidates.any() else int(np.argmin(distance))
    band = Band("RGS", "NISP", "Euclid", (1.2, 1.55, 1.9), 0.3, 0.5, 23.0, 21.5, 550.0)
    n = 60 * scale
    nearby = np.hypot((catalog.ra - catalog.ra[target]) * np.cos(np.radians(near[1])),
                      catalog.dec - catalog.dec[target]) < (n * 0.3 + 10) / 3600
    nearby[target] = True
    catalog, target = catalog.subset(nearby), int(np.sum(nearby[:target]))
    wave = np.linspace(*CUBE_WAVE_M, CUBE_CHANNELS + 1)
    centres_um = (wave[:-1] + wave[1:]) / 2 * 1e6
    log_waves = np.log([b.wave_um[1] for b in BANDS])
    order = np.argsort(log_waves)
    cards = wcs_cards(catalog.ra[target], catalog.dec[target], band.pixel_arcsec / 3600, (n, n),
                      None)
    wcs2d = WCS(cards)
    rng = rng_for(seed, "cube", "pixels")
    cube = np.empty((CUBE_CHANNELS, n, n), dtype=np.float32)
    for channel, lam in enumerate(centres_um):
        mags = [np.interp(np.log(lam), log_waves[order], row[order]) for row in catalog.mags]
        fluxes = 10 ** ((AB_ZERO_UJY - np.asarray(mags)) / 2.5)
        line = np.where(catalog.line_um > 0, 4.0 * np.exp(
            -0.5 * ((lam - catalog.line_um) / 0.006) ** 2), 0.0)
        image = render(wcs2d, (n, n), band, catalog, fluxes * (1.0 + line))
        cube[channel] = image + rng.standard_normal((n, n)) * noise_sigma(band) * 3
    header = _common_cards(band, "CUBE", MAIN_TILES[0], MAIN_FIELD[0], _date_for(band, 0),
                           band.exptime)
    header["BUNIT"] = ("uJy", "microjansky per pixel per channel")
    header["WCSAXES"] = (3, "RA, Dec, wavelength")  # precedes the other WCS keywords
    for key in ("CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2"):
        header[key] = cards[key]
    header["CDELT1"], header["CDELT2"] = cards["CD1_1"], cards["CD2_2"]
    header["CTYPE3"] = ("WAVE", "vacuum wavelength")
    header["CUNIT3"] = "m"
    header["CRPIX3"] = 1.0
    header["CRVAL3"] = (float(wave[0] + wave[1]) / 2, "[m] centre of the first channel")
    header["CDELT3"] = float(wave[1] - wave[0])
    header["SPECSYS"] = "BARYCENT"
    header["RADESYS"] = "ICRS"
    path = root / "euclid" / "CUBE" / f"EUC_MER_CUBE-MOSAIC-RGS_TILE{MAIN_TILES[0]}.fits"
    _write_fits(path, fits.HDUList([fits.PrimaryHDU(cube, header)]))
    return path


def _write_epochs(root: Path, seed: int, side: float, catalog: Catalog,
                  variable_id: int) -> list[Path]:
    """VIS BGSUB and RMS images of one field at every visit (demo_epochs), dithered by an
    arcsecond, with the variable star at its injected magnitude and the asteroid on its
    track; writes the sidecars variable.csv and asteroid.csv."""
    band = BAND_BY_NAME["VIS"]
    paths = []
    dates = demo_epochs.epoch_dates(seed)
    base_flux = catalog.fluxes_ujy(band)
    for epoch, date in enumerate(dates):
        dither = rng_for(seed, "dither", epoch).uniform(-1.0, 1.0, 2) / 3600.0
        centre = (EPOCH_FIELD[1] + dither[0], EPOCH_FIELD[2] + dither[1])
        cards = _band_cards(band, centre, side)
        mid = demo_epochs.mid_exposure(date)
        variable_flux = 10 ** ((AB_ZERO_UJY - float(demo_epochs.variable_mag(mid))) / 2.5)
        sky = demo_epochs.with_asteroid(
            catalog, *(float(v) for v in demo_epochs.asteroid_position(mid, EPOCH_FIELD[1:])))
        fluxes = np.where(sky.ids == variable_id, variable_flux, sky.fluxes_ujy(band))
        assert np.allclose(fluxes[:-1][catalog.ids != variable_id],
                           base_flux[catalog.ids != variable_id])
        images, extra = band_images(seed, f"epoch{epoch}", band, cards, sky, fluxes)
        extra["EPOCH"] = (epoch + 1, "visit number of this field")
        folder = root / "euclid" / "EPOCHS" / date[:10]
        for product in ("BGSUB", "RMS"):
            common = _common_cards(band, product, EPOCH_TILE, EPOCH_FIELD[0], date,
                                   demo_epochs.EXPOSURE_S)
            header = _image_header(common, cards, extra if product == "BGSUB" else fits.Header())
            path = folder / f"EUC_MER_{product}-MOSAIC-VIS_TILE{EPOCH_TILE}.fits"
            _write_fits(path, fits.HDUList([fits.PrimaryHDU(images[product], header)]))
            paths.append(path)
    demo_epochs.write_variable_csv(root / "variable.csv", dates, variable_id)
    demo_epochs.write_asteroid_csv(root / "asteroid.csv", dates, EPOCH_FIELD[1:])
    return paths


def _write_sources(path: Path, catalogs: list[tuple[Catalog, str]], variable_id: int) -> None:
    """The sky catalog as CSV: positions, kind and AB magnitude in every band."""
    header = ["id", "ra", "dec", "field", "type", "variable", "r_half_arcsec",
              *(band.column for band in BANDS)]
    rows = [header]
    for catalog, field in catalogs:
        for i in range(len(catalog)):
            rows.append([str(catalog.ids[i]), f"{catalog.ra[i]:.7f}", f"{catalog.dec[i]:.7f}",
                         field, "galaxy" if catalog.is_galaxy[i] else "star",
                         str(int(catalog.ids[i] == variable_id)),
                         f"{catalog.r_half_arcsec[i]:.3f}",
                         *(f"{mag:.3f}" for mag in catalog.mags[i])])
    path.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_path(path) as temporary, open(temporary, "w", newline="") as stream:
        csv.writer(stream).writerows(rows)


def _count_image_hdus(path: Path) -> int:
    with fits.open(path) as hdus:
        return sum(1 for hdu in hdus if hdu.is_image and hdu.header.get("NAXIS", 0) > 0)


class _atomic_path:  # noqa: N801 - used like a function in ``with``
    """Context manager giving a temporary path that replaces ``path`` on success."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Hidden, per-process name in the same directory, so that os.replace is atomic.
        self.temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        return self.temporary

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if kind is None:
            os.replace(self.temporary, self.path)
        else:
            self.temporary.unlink(missing_ok=True)


def _write_fits(path: Path, hdus: fits.HDUList) -> None:
    with _atomic_path(path) as temporary:
        hdus.writeto(temporary, overwrite=True, output_verify="exception")


def _atomic_write_text(path: Path, text: str) -> None:
    with _atomic_path(path) as temporary:
        temporary.write_text(text)
