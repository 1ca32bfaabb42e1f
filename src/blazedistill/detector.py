"""Face detection with any BlazeFace-contract model: image in, detections in original-image pixels out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from blazedistill.anchors import generate_anchors
from blazedistill.decode import decode_boxes, decode_scores, valid_detections
from blazedistill.imageio import ImageSource, read_image
from blazedistill.nms import batched_weighted_nms
from blazedistill.preprocess import Letterbox, letterbox_into
from blazedistill.specs import ModelSpec

KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")

#: decode JPEG files at a reduced size while both sides stay >= this many times the model input size
DRAFT_FACTOR = 2


@dataclass(eq=False)
class Detection:
    """One face: `score` in [0, 1], `box` (4,) xmin, ymin, xmax, ymax and `keypoints` (6, 2) (x, y), in
    pixels of the original image (may extend past its border). Keypoints: see KEYPOINT_NAMES."""

    score: float
    box: np.ndarray
    keypoints: np.ndarray

    def to_dict(self, ndigits: int | None = None) -> dict:
        """JSON-ready {"score", "box": [4], "keypoints": [[x, y] x 6]}; optionally rounded to `ndigits`."""

        def r(v: float) -> float:
            return round(float(v), ndigits) if ndigits is not None else float(v)

        return {
            "score": r(self.score),
            "box": [r(v) for v in self.box],
            "keypoints": [[r(x), r(y)] for x, y in self.keypoints],
        }


def _model_device(model: torch.nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


class Detector:
    """Wraps a BlazeFace-contract model (forward (N, 3, S, S) in [-1, 1] -> (N, A, 16), (N, A, 1)).

    `spec` defaults to `model.spec`, `min_score` to the spec's threshold; `device` moves the model
    (default: where its parameters live, else CPU).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        spec: ModelSpec | None = None,
        min_score: float | None = None,
        device: str | torch.device | None = None,
    ):
        spec = spec if spec is not None else getattr(model, "spec", None)
        if spec is None:
            raise ValueError("the model has no .spec; pass spec=ModelSpec(...) (see blazedistill.specs)")
        self.spec = spec
        self.min_score = spec.min_score if min_score is None else float(min_score)
        if isinstance(model, torch.nn.Module):
            model = model.eval()
            if device is not None:
                model = model.to(device)
            self.device = torch.device(device) if device is not None else _model_device(model)
        else:
            self.device = torch.device(device or "cpu")
        self.model = model
        anchors = generate_anchors(spec.anchors)
        if len(anchors) != spec.num_anchors:
            raise ValueError(f"{spec.name}: anchor options give {len(anchors)} anchors, spec says {spec.num_anchors}")
        self.anchors = torch.from_numpy(anchors).to(self.device)

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    def prepare_into(self, out: np.ndarray, image: ImageSource) -> Letterbox:
        """Load `image` (path, PIL or HxWx3 array), letterbox it into `out` ((3, S, S) float32 numpy)."""
        loaded = read_image(image, min_size=DRAFT_FACTOR * self.input_size)
        box = letterbox_into(out, loaded.pixels, self.input_size)
        return box.rescaled(loaded.reduction, loaded.width, loaded.height)

    def prepare(self, image: ImageSource) -> tuple[np.ndarray, Letterbox]:
        """One image -> ((3, S, S) float32 model input, Letterbox)."""
        out = np.empty((3, self.input_size, self.input_size), np.float32)
        return out, self.prepare_into(out, image)

    @torch.inference_mode()
    def detect_tensor(
        self, batch: torch.Tensor | np.ndarray, letterboxes: Sequence[Letterbox]
    ) -> list[list[Detection]]:
        """Run the model on prepared inputs (N, 3, S, S) and map detections back through `letterboxes`."""
        if len(letterboxes) != batch.shape[0]:
            raise ValueError(f"{batch.shape[0]} inputs but {len(letterboxes)} letterboxes")
        if batch.shape[0] == 0:
            return []
        regressors, logits = self.model(torch.as_tensor(batch).to(self.device))
        return self.postprocess(regressors, logits, letterboxes)

    @torch.inference_mode()
    def postprocess(
        self, regressors: torch.Tensor, logits: torch.Tensor, letterboxes: Sequence[Letterbox]
    ) -> list[list[Detection]]:
        """Raw outputs (N, A, 16), (N, A, 1) -> per image a list of detections in original pixels."""
        regressors = torch.as_tensor(regressors, device=self.device).float()
        logits = torch.as_tensor(logits, device=self.device).float()
        decoded = decode_boxes(regressors, self.anchors, self.spec.input_size)
        scores = decode_scores(logits)
        keep = valid_detections(decoded, scores, self.min_score)
        results = []
        for (rows, top_scores), box in zip(
            batched_weighted_nms(decoded, scores, keep, self.spec.nms_iou), letterboxes, strict=True
        ):
            rows, top_scores = rows.cpu().numpy(), top_scores.cpu().numpy()
            boxes = box.boxes_to_pixels(rows[:, :4])
            keypoints = box.to_pixels(rows[:, 4:].reshape(-1, 6, 2))
            results.append([Detection(float(s), b, k) for s, b, k in zip(top_scores, boxes, keypoints, strict=True)])
        return results

    def detect(self, image: ImageSource) -> list[Detection]:
        """Faces in one image (path, PIL image or HxWx3 uint8 array), best first."""
        return self.detect_batch([image], batch_size=1)[0]

    def detect_batch(self, images: Iterable[ImageSource], batch_size: int = 32) -> list[list[Detection]]:
        """Faces in each image, batched through the model; a list of detections per image, in input order."""
        images = list(images)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        results: list[list[Detection]] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            batch = np.empty((len(chunk), 3, self.input_size, self.input_size), np.float32)
            boxes = [self.prepare_into(batch[i], image) for i, image in enumerate(chunk)]
            results.extend(self.detect_tensor(batch, boxes))
        return results
