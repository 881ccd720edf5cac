"""How much each size generates (see the package docstring for the table and timings)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SIZES", "SizeSpec"]


@dataclass(frozen=True)
class SizeSpec:
    """Counts and matrix sizes of one cohort size; every task has three sites."""

    radiograph_patients_per_site: int
    radiograph_matrix: int  # largest side in pixels; sites scale it down a little
    volume_patients_per_site: int
    volume_shape: tuple[int, int, int]  # (slices, rows, cols) before per-site variation
    slide_patients_per_site: int  # even, so that labels balance within every site
    slide_size: int  # level-0 side in pixels
    papyri_per_site: int  # papyrus documents per collection (the "patients")
    crops_per_papyrus: int
    crop_size: int  # side of a one-glyph photo in pixels
    large_photos: int  # multi-glyph photographs that need tiling
    large_size: int  # their longest side in pixels
    fundus_patients_per_site: int  # two eyes (photographs) per patient
    fundus_size: int  # side of a fundus photograph in pixels before per-camera variation
    petct_patients_per_site: int  # one PET/CT study (a CT and a PET series) per patient, two centres
    petct_shape: tuple[int, int, int]  # CT (slices, rows, cols); the PET has its own coarser grid


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec(
        radiograph_patients_per_site=4, radiograph_matrix=128,
        volume_patients_per_site=2, volume_shape=(20, 48, 48),
        slide_patients_per_site=2, slide_size=1024,
        papyri_per_site=2, crops_per_papyrus=3, crop_size=64,
        large_photos=1, large_size=2048,
        fundus_patients_per_site=4, fundus_size=64,
        petct_patients_per_site=2, petct_shape=(10, 32, 32),
    ),
    "small": SizeSpec(
        radiograph_patients_per_site=20, radiograph_matrix=128,
        volume_patients_per_site=8, volume_shape=(24, 64, 64),
        slide_patients_per_site=2, slide_size=2048,
        papyri_per_site=8, crops_per_papyrus=6, crop_size=64,
        large_photos=2, large_size=2048,
        fundus_patients_per_site=40, fundus_size=96,
        petct_patients_per_site=10, petct_shape=(16, 48, 48),
    ),
    "demo": SizeSpec(
        radiograph_patients_per_site=60, radiograph_matrix=256,
        volume_patients_per_site=20, volume_shape=(32, 96, 96),
        slide_patients_per_site=4, slide_size=4096,
        papyri_per_site=20, crops_per_papyrus=7, crop_size=96,
        large_photos=4, large_size=2560,
        fundus_patients_per_site=100, fundus_size=256,
        petct_patients_per_site=40, petct_shape=(40, 96, 96),
    ),
}
