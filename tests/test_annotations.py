"""Annotation readers on generated files (dlib XML, WIDER FACE txt, COCO json) and on the real dlib set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blazedistill.evaluation.annotations import (
    AnnotationError,
    guess_format,
    read_annotations,
    read_coco_json,
    read_dlib_xml,
    read_wider_txt,
)

DLIB_XML = """<?xml version='1.0' encoding='ISO-8859-1'?>
<dataset>
<name>generated</name>
<images>
  <image file='a.jpg'>
    <box top='10' left='20' width='30' height='40'/>
    <box top='0' left='0' width='5' height='5' ignore='1'>
      <part name='00' x='1' y='2'/>
    </box>
  </image>
  <image file='sub/b.jpg'/>
</images>
</dataset>
"""


def test_dlib_xml(tmp_path):
    (tmp_path / "faces.xml").write_text(DLIB_XML)
    gts = read_dlib_xml(tmp_path / "faces.xml")
    assert list(gts) == [(tmp_path / "a.jpg").resolve(), (tmp_path / "sub" / "b.jpg").resolve()]
    a = gts[(tmp_path / "a.jpg").resolve()]
    np.testing.assert_array_equal(a.boxes, [[20, 10, 50, 50], [0, 0, 5, 5]])
    assert a.ignore.tolist() == [False, True]
    assert len(gts[(tmp_path / "sub" / "b.jpg").resolve()]) == 0
    other = read_annotations(tmp_path / "faces.xml", images_root=tmp_path / "pics")
    assert (tmp_path / "pics" / "a.jpg").resolve() in other


@pytest.mark.parametrize(
    "body, message",
    [
        ("<dataset><images><image file='a.jpg'><box top='1' left='2' width='3'/></image></images></dataset>",
         r"image 'a.jpg' box #1: missing attribute 'height'"),
        ("<dataset><images><image file='a.jpg'><box top='x' left='2' width='3' height='3'/></image></images>"
         "</dataset>", r"box #1: attribute top='x' is not a number"),
        ("<dataset><images><image><box/></image></images></dataset>", r"<image> #1: missing attribute 'file'"),
        ("<dataset><images>\n<image file='a.jpg'>\n</images></dataset>", r"line 3: malformed XML"),
        ("<dataset/>", r"no <images> element"),
        ("<?xml version='1.0'?><!DOCTYPE d [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><dataset>&e;</dataset>",
         r"entity declarations are not accepted"),
    ],
)  # fmt: skip
def test_dlib_xml_errors_name_file_and_element(tmp_path, body, message):
    path = tmp_path / "bad.xml"
    path.write_text(body)
    with pytest.raises(AnnotationError, match=message) as info:
        read_dlib_xml(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


WIDER_LINES = [
    "0--Parade/0_Parade_marchingband_1_849.jpg",
    "1",
    "449 330 122 149 0 0 0 0 0 0",
    "0--Parade/0_Parade_Parade_0_452.jpg",
    "0",
    "0 0 0 0 0 0 0 0 0 0",
    "1--Handshaking/1_Handshaking_1.jpg",
    "3",
    "78 221 7 8 2 0 0 0 0 0",
    "78 238 14 17 2 0 0 1 0 0",
    "113 212 11 15 2 0 0 0 0 0",
    "2--Demo/2_Demo_empty_at_end.jpg",
    "0",
    "",
]
# the real files end every face line with a space
WIDER_TXT = "".join(line + (" \n" if " " in line else "\n") for line in WIDER_LINES)


def test_wider_txt_with_zero_face_quirk_and_invalid_boxes(tmp_path):
    path = tmp_path / "wider_face_val_bbx_gt.txt"
    path.write_text(WIDER_TXT)
    root = tmp_path / "WIDER_val" / "images"
    gts = read_wider_txt(path, images_root=root)
    names = [p.relative_to(root.resolve()).as_posix() for p in gts]
    assert names == [
        "0--Parade/0_Parade_marchingband_1_849.jpg",
        "0--Parade/0_Parade_Parade_0_452.jpg",  # the line of zeros after it was not read as a record
        "1--Handshaking/1_Handshaking_1.jpg",
        "2--Demo/2_Demo_empty_at_end.jpg",
    ]
    boxes = list(gts.values())
    np.testing.assert_array_equal(boxes[0].boxes, [[449, 330, 571, 479]])
    assert len(boxes[1]) == 0 and len(boxes[3]) == 0
    np.testing.assert_array_equal(boxes[2].boxes[1], [78, 238, 92, 255])
    assert boxes[2].ignore.tolist() == [False, True, False]  # invalid=1 -> don't care


def test_wider_txt_without_zero_lines_still_reads(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text("a.jpg\n0\nb.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n")
    gts = read_annotations(path)
    assert [len(g) for g in gts.values()] == [0, 1]


@pytest.mark.parametrize(
    "body, message",
    [
        ("a.jpg\nthree\n", r"line 2: expected the face count of 'a.jpg'"),
        ("a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", r"end of file: expected 'x1 y1 w h \.\.\.' for a face of 'a.jpg'"),
        ("a.jpg\n1\n1 2 3\n", r"line 3: expected 'x1 y1 w h"),
        ("a.jpg\n1\n1 2 -3 4 0 0 0 0 0 0\n", r"line 3: negative width"),
        ("a.jpg\n1\n1 2 3 4\n5 6 7 8\n", r"line 4: expected an image file name"),
        ("a.jpg\n0\na.jpg\n0\n", r"line 3: image 'a.jpg' is listed twice"),
    ],
)
def test_wider_txt_errors_name_the_line(tmp_path, body, message):
    path = tmp_path / "gt.txt"
    path.write_text(body)
    with pytest.raises(AnnotationError, match=message) as info:
        read_wider_txt(path)
    assert str(info.value).startswith(str(path))


def _coco(tmp_path, categories, annotations):
    data = {
        "images": [{"id": 7, "file_name": "x.jpg"}, {"id": 8, "file_name": "y.jpg"}],
        "categories": categories,
        "annotations": annotations,
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_json_face_category_and_crowd(tmp_path):
    anns = [
        {"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 20, 30, 40], "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 100, 50], "iscrowd": 1},
        {"id": 3, "image_id": 7, "category_id": 2, "bbox": [5, 5, 5, 5], "iscrowd": 0},
    ]
    path = _coco(tmp_path, [{"id": 1, "name": "Face"}, {"id": 2, "name": "person"}], anns)
    gts = read_coco_json(path)
    x, y = gts[(tmp_path / "x.jpg").resolve()], gts[(tmp_path / "y.jpg").resolve()]
    np.testing.assert_array_equal(x.boxes, [[10, 20, 40, 60], [0, 0, 100, 50]])
    assert x.ignore.tolist() == [False, True]
    assert len(y) == 0  # images without faces stay: detections there are false positives
    assert len(read_coco_json(path, category="person")[(tmp_path / "x.jpg").resolve()]) == 1
    with pytest.raises(AnnotationError, match="no category 'dog'"):
        read_coco_json(path, category="dog")


@pytest.mark.parametrize(
    "categories, anns, message",
    [
        ([{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}], [], r"no 'face' category among cat, dog"),
        ([], [{"image_id": 9, "bbox": [0, 0, 1, 1]}], r"annotations\[0\]: unknown image_id 9"),
        ([], [{"image_id": 7, "bbox": [0, 0, 1]}], r"annotations\[0\]: bbox must be \[x, y, w, h\]"),
        ([], [{"image_id": 7, "bbox": [0, 0, -1, 1]}], r"annotations\[0\]: bad width or height"),
    ],
)
def test_coco_json_errors(tmp_path, categories, anns, message):
    with pytest.raises(AnnotationError, match=message):
        read_coco_json(_coco(tmp_path, categories, anns))


def test_coco_json_image_listed_twice_is_an_error_not_a_silent_overwrite(tmp_path):
    path = tmp_path / "dup.json"
    images = [{"id": 1, "file_name": "x.jpg"}, {"id": 2, "file_name": "x.jpg"}]
    path.write_text(json.dumps({"images": images, "annotations": [{"image_id": 1, "bbox": [1, 2, 3, 4]}]}))
    with pytest.raises(AnnotationError, match=r"images\[1\]: image 'x.jpg' is listed twice \(also images\[0\]\)"):
        read_coco_json(path)
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.jpg"}, {"id": 1, "file_name": "y.jpg"}]}))
    with pytest.raises(AnnotationError, match=r"images\[1\]: image id 1 is listed twice"):
        read_coco_json(path)


def test_coco_json_malformed_and_missing(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"images": [\n{"id": 1,}\n]}')
    with pytest.raises(AnnotationError, match=r"bad.json: line 2: malformed JSON"):
        read_coco_json(path)
    with pytest.raises(AnnotationError, match="no such annotation file"):
        read_annotations(tmp_path / "nope.json")
    with pytest.raises(AnnotationError, match="cannot tell the annotation format"):
        guess_format("gt.csv")
    with pytest.raises(AnnotationError, match="unknown annotation format 'voc'"):
        read_annotations(path, format="voc")


def test_real_dlib_testing_set(shared_data):
    path = shared_data / "dlib_faces" / "testing.xml"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    gts = read_annotations(path)
    assert len(gts) == 5
    assert sum(len(g) for g in gts.values()) == 25
    assert all(p.is_file() for p in gts)
    first = gts[(path.parent / "2008_002470.jpg").resolve()]
    np.testing.assert_array_equal(first.boxes[0], [274, 181, 326, 234])
