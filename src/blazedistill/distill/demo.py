"""The built-in demo set: real photos shipped inside installed packages, expanded by augmentation.

Faces: matplotlib's ``sample_data/grace_hopper.jpg`` (matplotlib is a dependency), plus scikit-image's
``data/astronaut.png`` when scikit-image happens to be installed. Face-free pictures shipped beside them
serve as negatives and canvas backgrounds. Nothing is downloaded and nothing is written.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .data import ImageRef

# (package, path inside the package, holds a face)
_CANDIDATES = (
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", True),
    ("skimage", "data/astronaut.png", True),
    ("matplotlib", "mpl-data/sample_data/Minduka_Present_Blue_Pack.png", False),
    ("matplotlib", "mpl-data/sample_data/logo2.png", False),
    ("skimage", "data/chelsea.png", False),
    ("skimage", "data/coffee.png", False),
    ("skimage", "data/rocket.jpg", False),
)

FACE_SHARE = 0.8  # of demo samples drawn from face photos; the rest are negatives

REAL_DATA_HINT = (
    "For a real run pass --data, e.g. --data '../shared/data/utkface/utkface-{00000..00003}.tar' "
    "--val ../shared/data/utkface/utkface-00004.tar, or any folder of photos"
)


@dataclass(frozen=True)
class DemoPhotos:
    faces: list[ImageRef]
    negatives: list[ImageRef]

    def describe(self) -> str:
        names = ", ".join(Path(r.path).name for r in self.faces + self.negatives)
        return f"{len(self.faces)} face photo(s) and {len(self.negatives)} face-free picture(s) ({names})"


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_demo_photos() -> DemoPhotos:
    """The demo photos present in this installation; raises FileNotFoundError when no face photo is found."""
    faces, negatives = [], []
    for package, relative, has_face in _CANDIDATES:
        root = _package_dir(package)
        if root is not None and (root / relative).is_file():
            (faces if has_face else negatives).append(ImageRef(str(root / relative)))
    if not faces:
        raise FileNotFoundError(
            "the built-in demo needs matplotlib's sample_data/grace_hopper.jpg, which is not installed; "
            + REAL_DATA_HINT
        )
    return DemoPhotos(faces, negatives)


def demo_refs(num_samples: int, photos: DemoPhotos | None = None) -> list[ImageRef]:
    """``num_samples`` refs cycling over the demo photos (about 80% faces): each index is augmented differently."""
    photos = photos or find_demo_photos()
    refs = []
    for i in range(num_samples):
        if photos.negatives and (i % 10) >= round(10 * FACE_SHARE):
            refs.append(photos.negatives[i % len(photos.negatives)])
        else:
            refs.append(photos.faces[i % len(photos.faces)])
    return refs


def demo_message(num_train: int, num_val: int, photos: DemoPhotos) -> str:
    return (
        f"DEMO DATA: no --data given, so this run trains on {num_train} (validates on {num_val}) augmented "
        f"samples of {photos.describe()} shipped inside installed packages. It shows the pipeline working; "
        f"it is not a useful student. {REAL_DATA_HINT}."
    )
