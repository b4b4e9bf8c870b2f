"""The synthetic sky of the demo archive: bands, a source catalog, SIP WCSs and fast rendering.

Everything is a pure function of its arguments (random generators are seeded from names with
:func:`rng_for`), so the demo archive built from it is byte-for-byte reproducible.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

AB_ZERO_UJY = 23.9  # AB magnitude of 1 microjansky: m = 23.9 - 2.5 log10(f / uJy)
FLAG_BITS = {1: "SATURATED", 2: "COSMIC_RAY", 4: "BAD_COLUMN", 8: "STAR_HALO", 16: "LOW_COVERAGE"}


@dataclass(frozen=True)
class Band:
    """One filter of one instrument and the depth/PSF/sky its images imitate."""

    name: str
    instrument: str
    telescope: str
    wave_um: tuple[float, float, float]  # (min, effective, max) wavelength in micrometres
    pixel_arcsec: float
    fwhm_arcsec: float
    depth_mag: float  # 5-sigma point-source limit
    sky_mag_arcsec2: float
    exptime: float

    @property
    def column(self) -> str:
        """Name of this band's magnitude column in sources.csv (``mag_NIR_Y``)."""
        return "mag_" + self.name.replace("-", "_")


BANDS: tuple[Band, ...] = (
    Band("VIS", "VIS", "Euclid", (0.55, 0.715, 0.90), 0.2, 0.30, 25.6, 22.3, 2240.0),
    Band("NIR-Y", "NISP", "Euclid", (0.95, 1.08, 1.21), 0.4, 0.50, 24.3, 22.1, 448.0),
    Band("NIR-J", "NISP", "Euclid", (1.17, 1.37, 1.57), 0.4, 0.52, 24.4, 22.0, 448.0),
    Band("NIR-H", "NISP", "Euclid", (1.52, 1.77, 2.02), 0.4, 0.55, 24.3, 21.9, 448.0),
    Band("DES-G", "DECAM", "CTIO-4m Blanco", (0.40, 0.48, 0.55), 0.3, 1.10, 25.0, 22.0, 900.0),
    Band("DES-R", "DECAM", "CTIO-4m Blanco", (0.56, 0.64, 0.71), 0.3, 0.95, 24.7, 21.2, 900.0),
    Band("DES-I", "DECAM", "CTIO-4m Blanco", (0.70, 0.78, 0.86), 0.3, 0.90, 24.2, 20.5, 900.0),
    Band("DES-Z", "DECAM", "CTIO-4m Blanco", (0.85, 0.92, 1.00), 0.3, 0.90, 23.6, 19.6, 900.0),
)
BAND_BY_NAME = {band.name: band for band in BANDS}

# Exponential profile as a mixture of 4 circular Gaussians (variances in units of r_e^2),
# fitted once to exp(-1.678 r / r_e); mixtures convolve with a Gaussian PSF analytically.
_EXP_VARIANCES = np.array([0.03162278, 0.11659144, 0.42986623, 1.58489319])
_EXP_WEIGHTS = np.array([0.01815867, 0.07505963, 0.39892255, 0.50785915])
# PSF: a Gaussian core plus a faint wide wing (variance factor, weight).
_PSF_VARIANCES = np.array([1.0, 6.25])
_PSF_WEIGHTS = np.array([0.92, 0.08])
# SIP coefficients (pixel units) per instrument: small, a few tenths of a pixel at the corners.
_SIP = {
    "VIS": {"A_2_0": 4.1e-7, "A_1_1": -2.6e-7, "A_0_2": 1.5e-7,
            "B_2_0": -1.8e-7, "B_1_1": 3.2e-7, "B_0_2": 5.3e-7},
    "NISP": {"A_2_0": -6.2e-7, "A_1_1": 2.1e-7, "A_0_2": 8.4e-7,
             "B_2_0": 3.9e-7, "B_1_1": -7.5e-7, "B_0_2": -2.2e-7},
    "DECAM": {"A_2_0": 2.7e-7, "A_1_1": 4.4e-7, "A_0_2": -3.1e-7,
              "B_2_0": 1.2e-7, "B_1_1": -1.9e-7, "B_0_2": 3.6e-7},
}


def rng_for(seed: int, *names: object) -> np.random.Generator:
    """A random generator that depends only on the seed and the names (not on call order)."""
    keys = [zlib.crc32(str(name).encode()) for name in names]
    return np.random.default_rng([seed, *keys])


@dataclass(frozen=True)
class Catalog:
    """Sky sources (ICRS degrees); magnitudes are AB, one column per band in ``BANDS`` order."""

    ids: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    is_galaxy: np.ndarray
    mags: np.ndarray  # (n_sources, n_bands)
    r_half_arcsec: np.ndarray  # 0 for stars
    axis_ratio: np.ndarray
    position_angle_deg: np.ndarray  # major axis, east of north
    line_um: np.ndarray  # observed wavelength of an emission line (0: none)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: np.ndarray) -> Catalog:
        """The sources selected by a boolean mask or index array."""
        return Catalog(*(getattr(self, name)[keep] for name in self.__dataclass_fields__))

    def fluxes_ujy(self, band: Band) -> np.ndarray:
        """Total flux of every source in ``band`` in microjansky."""
        column = BANDS.index(band)
        return 10.0 ** ((AB_ZERO_UJY - self.mags[:, column]) / 2.5)


def make_catalog(seed: int, field: str, ra: float, dec: float, size_deg: tuple[float, float],
                 first_id: int, density_arcmin2: float = 55.0) -> Catalog:
    """Stars and galaxies spread uniformly over a (width, height) field, with spectral slopes.

    Each source has a VIS magnitude from rising number counts and a power-law spectrum
    f_nu ~ lambda^beta (stars bluer or redder, galaxies mostly red), which gives its magnitude
    in every band, so colour composites look like a real survey.
    """
    rng = rng_for(seed, "catalog", field)
    width, height = size_deg
    count = int(round(density_arcmin2 * width * height * 3600.0))
    field_wcs = tan_wcs(ra, dec, 1.0 / 3600.0, (1, 1), sip=None)
    east = rng.uniform(-width / 2, width / 2, count) * 3600.0  # arcsec from the centre
    north = rng.uniform(-height / 2, height / 2, count) * 3600.0
    src_ra, src_dec = field_wcs.all_pix2world(-east, north, 0)
    is_galaxy = rng.random(count) > 0.12
    # Number counts N(<m) ~ 10^(0.3 m): inverse-transform sampling between 17.5 and 26.5.
    lo, hi = 10 ** (0.3 * 17.5), 10 ** (0.3 * 26.5)
    mag_vis = np.log10(rng.uniform(lo, hi, count)) / 0.3
    mag_vis[~is_galaxy] = rng.uniform(16.5, 24.0, (~is_galaxy).sum())
    slope = np.where(is_galaxy, rng.normal(1.1, 0.7, count), rng.uniform(-1.2, 2.2, count))
    waves = np.array([band.wave_um[1] for band in BANDS])
    mags = mag_vis[:, None] - 2.5 * slope[:, None] * np.log10(waves / BANDS[0].wave_um[1])
    # A 4000 A break for red galaxies: fainter in the bluest DES band.
    mags[:, 4] += np.where(is_galaxy & (slope > 1.2), rng.uniform(0.3, 1.0, count), 0.0)
    r_half = np.where(is_galaxy, np.clip(rng.lognormal(np.log(0.5), 0.5, count)
                                         * 10 ** (-0.08 * (mag_vis - 22)), 0.12, 1.2), 0.0)
    has_line = is_galaxy & (rng.random(count) < 0.5)
    line_um = np.where(has_line, 0.6563 * (1.0 + rng.uniform(0.85, 1.9, count)), 0.0)
    return Catalog(
        ids=np.arange(first_id, first_id + count), ra=np.mod(src_ra, 360.0), dec=src_dec,
        is_galaxy=is_galaxy, mags=np.round(mags, 3), r_half_arcsec=np.round(r_half, 3),
        axis_ratio=np.where(is_galaxy, rng.uniform(0.3, 1.0, count), 1.0),
        position_angle_deg=rng.uniform(0.0, 180.0, count), line_um=np.round(line_um, 4),
    )


def tan_wcs(ra: float, dec: float, scale_deg: float, shape: tuple[int, int],
            sip: dict[str, float] | None) -> WCS:
    """A north-up TAN (or TAN-SIP) WCS centred on (ra, dec) for an image of ``shape`` (ny, nx)."""
    return WCS(wcs_cards(ra, dec, scale_deg, shape, sip))


def wcs_cards(ra: float, dec: float, scale_deg: float, shape: tuple[int, int],
              sip: dict[str, float] | None) -> fits.Header:
    """FITS WCS keywords (CD matrix; SIP forward and first-order inverse when ``sip`` is given)."""
    suffix = "-SIP" if sip else ""
    header = fits.Header()
    header["WCSAXES"] = 2
    header["CTYPE1"] = ("RA---TAN" + suffix, "gnomonic projection" + (" + SIP" if sip else ""))
    header["CTYPE2"] = "DEC--TAN" + suffix
    header["CUNIT1"] = "deg"
    header["CUNIT2"] = "deg"
    header["CRPIX1"] = (shape[1] + 1) / 2.0
    header["CRPIX2"] = (shape[0] + 1) / 2.0
    header["CRVAL1"] = float(ra)
    header["CRVAL2"] = float(dec)
    header["CD1_1"] = -scale_deg
    header["CD1_2"] = 0.0
    header["CD2_1"] = 0.0
    header["CD2_2"] = scale_deg
    header["RADESYS"] = "ICRS"
    if sip:
        header["A_ORDER"] = 2
        header["B_ORDER"] = 2
        for key, value in sip.items():
            header[key] = value
        # To first order the inverse polynomial is the negated forward one (error < 1e-3 pix).
        header["AP_ORDER"] = 2
        header["BP_ORDER"] = 2
        for key, value in sip.items():
            header[key[0] + "P" + key[1:]] = -value
    return header


def sip_for(band: Band) -> dict[str, float]:
    """The SIP coefficients of ``band``'s instrument, varied slightly per band."""
    factor = 1.0 + 0.1 * (BANDS.index(band) % 4)
    return {key: value * factor for key, value in _SIP[band.instrument].items()}


def noise_sigma(band: Band) -> float:
    """Per-pixel sky noise (uJy) that makes a point source of ``depth_mag`` a 5-sigma detection."""
    sigma_pix = band.fwhm_arcsec / 2.3548 / band.pixel_arcsec
    limit_flux = 10 ** ((AB_ZERO_UJY - band.depth_mag) / 2.5)
    return limit_flux / 5.0 / np.sqrt(4 * np.pi * sigma_pix**2)


def sky_per_pixel(band: Band) -> float:
    """Sky brightness per pixel in uJy (what the noise of a sky-limited image comes from)."""
    return 10 ** ((AB_ZERO_UJY - band.sky_mag_arcsec2) / 2.5) * band.pixel_arcsec**2


def render(wcs: WCS, shape: tuple[int, int], band: Band, catalog: Catalog,
           fluxes: np.ndarray | None = None, psf_gradient: float = 0.0) -> np.ndarray:
    """Noise-free image (float64, uJy/pixel) of the catalog seen through ``wcs`` in ``band``.

    Each source is drawn only in a small postage stamp, all stamps of a kind at once: Gaussian
    mixtures (PSF for stars, exponential disc convolved with the PSF for galaxies) evaluated with
    numpy broadcasting, then normalised so that the stamp holds the source's total flux.
    ``psf_gradient``: the PSF width varies across the image (:func:`psf_width_factor`).
    """
    ny, nx = shape
    half = int(np.ceil(4.0 / band.pixel_arcsec))  # 4" stamp radius
    x, y = wcs.all_world2pix(catalog.ra, catalog.dec, 0)
    inside = (x > -half) & (x < nx + half - 1) & (y > -half) & (y < ny + half - 1)
    fluxes = catalog.fluxes_ujy(band) if fluxes is None else fluxes
    canvas = np.zeros((ny + 4 * half, nx + 4 * half))  # image pixel p is canvas pixel p + 2 half
    scale_arcsec = np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600.0
    # Intermediate world x grows toward the east, so this maps arcsec (east, north) -> pixels.
    to_pixels = np.linalg.inv(wcs.pixel_scale_matrix * 3600.0)
    psf_var = (band.fwhm_arcsec / 2.3548 / scale_arcsec) ** 2
    widths = psf_width_factor(x, y, shape, psf_gradient)
    for galaxies in (False, True):
        chosen = np.flatnonzero(inside & (catalog.is_galaxy == galaxies))
        if chosen.size == 0:
            continue
        sources = catalog.subset(chosen)
        weights, covariances = _mixture(sources, psf_var * widths[chosen] ** 2, to_pixels,
                                        galaxies)
        cx, cy = np.rint(x[chosen]).astype(int), np.rint(y[chosen]).astype(int)
        offsets = np.arange(-half, half + 1)
        dx = (cx[:, None] + offsets[None, :]) - x[chosen][:, None]  # (n, stamp)
        dy = (cy[:, None] + offsets[None, :]) - y[chosen][:, None]
        stamps = np.zeros((chosen.size, offsets.size, offsets.size))
        for weight, (cxx, cxy, cyy) in zip(weights, covariances, strict=True):
            det = cxx * cyy - cxy**2
            ixx, ixy, iyy = (cyy / det)[:, None, None], (-cxy / det)[:, None, None], \
                (cxx / det)[:, None, None]
            quad = (ixx * dx[:, None, :] ** 2 + 2 * ixy * dx[:, None, :] * dy[:, :, None]
                    + iyy * dy[:, :, None] ** 2)
            stamps += (weight / (2 * np.pi * np.sqrt(det)))[:, None, None] * np.exp(-0.5 * quad)
        stamps *= (fluxes[chosen] / stamps.sum(axis=(1, 2)))[:, None, None]
        for stamp, col, row in zip(stamps, cx, cy, strict=True):
            canvas[row + half:row + 3 * half + 1, col + half:col + 3 * half + 1] += stamp
    return canvas[2 * half:2 * half + ny, 2 * half:2 * half + nx]


def band_images(seed: int, key: object, band: Band, cards: fits.Header, catalog: Catalog,
                 fluxes: np.ndarray | None = None, psf_gradient: float = 0.0,
                 ) -> tuple[dict[str, np.ndarray], fits.Header]:
    """BGSUB, RMS, FLAG and BGMOD arrays of one band seen through the WCS in ``cards``.

    Returns the arrays by product name and the BGSUB-only keywords (GAIN, SATURATE).
    """
    wcs = WCS(cards)
    shape = (cards["NAXIS2"], cards["NAXIS1"])
    rng = rng_for(seed, key, band.name, "pixels")
    model = render(wcs, shape, band, catalog, fluxes, psf_gradient)
    ny, nx = shape
    yy, xx = np.linspace(0.0, 1.0, ny)[:, None], np.linspace(0.0, 1.0, nx)[None, :]
    phase = rng.uniform(0, 2 * np.pi, 2)
    coverage = 1.0 + 0.12 * np.sin(7 * xx + phase[0]) * np.cos(5 * yy + phase[1])
    edge = np.minimum(np.minimum(xx, 1 - xx), np.minimum(yy, 1 - yy))
    coverage = coverage * np.where(edge < 0.02, 1.6, 1.0)
    sigma = noise_sigma(band)
    gain = sky_per_pixel(band) / sigma**2  # sky-limited: sky variance = sky / gain
    rms = np.sqrt((sigma * coverage) ** 2 + model / gain)
    science = model + rng.standard_normal(shape) * rms
    psf_var = (band.fwhm_arcsec / 2.3548 / band.pixel_arcsec) ** 2
    saturate = 0.92 * 10 ** ((AB_ZERO_UJY - 17.5) / 2.5) / (2 * np.pi * psf_var)
    flags = np.where(science >= saturate, 1, 0).astype(np.int32)
    science = np.minimum(science, saturate)
    hits = rng.integers(0, ny * nx, max(1, ny * nx // 5000))
    flags.flat[hits] |= 2
    column = rng.integers(0, nx)
    flags[rng.integers(0, ny // 2):, column] |= 4
    x, y = wcs.all_world2pix(catalog.ra, catalog.dec, 0)
    bright = (~catalog.is_galaxy) & (catalog.mags[:, BANDS.index(band)] < 18.5)
    halo = int(np.ceil(6.0 / band.pixel_arcsec))  # 6" around bright stars
    for sx, sy in zip(x[bright], y[bright], strict=True):
        rows = slice(min(max(int(sy) - halo, 0), ny), min(max(int(sy) + halo + 2, 0), ny))
        cols = slice(min(max(int(sx) - halo, 0), nx), min(max(int(sx) + halo + 2, 0), nx))
        dy, dx = np.ogrid[rows, cols]
        flags[rows, cols] |= np.where(np.hypot(dx - sx, dy - sy) < halo, 8, 0).astype(np.int32)
    flags[coverage > 1.4] |= 16
    background = sky_per_pixel(band) * (0.03 + 0.01 * np.sin(3 * xx + phase[1]) + 0.008 * yy)
    science_cards = fits.Header()
    science_cards["GAIN"] = (round(float(gain), 3), "[electron/uJy] effective gain")
    science_cards["SATURATE"] = (round(float(saturate), 3), "[uJy] saturation level")
    images = {"BGSUB": science.astype(np.float32), "RMS": rms.astype(np.float32),
              "FLAG": flags, "BGMOD": background.astype(np.float32)}
    return images, science_cards


def psf_width_factor(x: np.ndarray, y: np.ndarray, shape: tuple[int, int],
                     gradient: float) -> np.ndarray:
    """How much wider than the band's nominal PSF the PSF is at 0-based pixel (x, y) of an
    image of ``shape``: 1 at the centre, 1 +/- ``gradient`` at opposite corners (linear in
    x + y), so that the PSF of a tile changes measurably from one side to the other."""
    ny, nx = shape
    u = np.asarray(x, dtype=float) / max(nx - 1, 1) - 0.5
    v = np.asarray(y, dtype=float) / max(ny - 1, 1) - 0.5
    return 1.0 + gradient * (u + v)


def psf_mixture(band: Band, scale_arcsec: float, width: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """(weights, variances in pixels^2) of the demo PSF of ``band`` on pixels of
    ``scale_arcsec``, ``width`` times the nominal width: what the images are rendered with."""
    psf_var = (band.fwhm_arcsec / 2.3548 / scale_arcsec) ** 2 * width**2
    return _PSF_WEIGHTS.copy(), _PSF_VARIANCES * psf_var


def _mixture(sources: Catalog, psf_var: float | np.ndarray, to_pixels: np.ndarray,
             galaxies: bool
             ) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Per-component weights and pixel covariances (xx, xy, yy) of stars or galaxies."""
    n = len(sources)
    weights, covariances = [], []
    if not galaxies:
        for psf_w, psf_v in zip(_PSF_WEIGHTS, _PSF_VARIANCES, strict=True):
            weights.append(np.full(n, psf_w))
            covariances.append((np.full(n, psf_v * psf_var), np.zeros(n),
                                np.full(n, psf_v * psf_var)))
        return weights, covariances
    theta = np.radians(sources.position_angle_deg)
    major = np.stack([np.sin(theta), np.cos(theta)], axis=-1)  # (east, north)
    minor = np.stack([np.cos(theta), -np.sin(theta)], axis=-1)
    major_pix, minor_pix = major @ to_pixels.T, minor @ to_pixels.T
    for exp_w, exp_v in zip(_EXP_WEIGHTS, _EXP_VARIANCES, strict=True):
        var_major = exp_v * sources.r_half_arcsec**2
        var_minor = var_major * sources.axis_ratio**2
        cov = (var_major[:, None, None] * major_pix[:, :, None] * major_pix[:, None, :]
               + var_minor[:, None, None] * minor_pix[:, :, None] * minor_pix[:, None, :])
        for psf_w, psf_v in zip(_PSF_WEIGHTS, _PSF_VARIANCES, strict=True):
            weights.append(np.full(n, exp_w * psf_w))
            covariances.append((cov[:, 0, 0] + psf_v * psf_var, cov[:, 0, 1],
                                cov[:, 1, 1] + psf_v * psf_var))
    return weights, covariances
