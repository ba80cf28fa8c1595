"""Open Images test-image download through img2dataset from a loopback server, with the OriginalMD5 check."""
import base64
import hashlib
import io

import pytest
from PIL import Image

from otterlib.data.goi_images import download_goi_images, integrity_counts, read_image_list, read_integrity
from otterlib.data.loopback import LoopbackImageServer

HEADER = ("ImageID,Subset,OriginalURL,OriginalLandingURL,License,AuthorProfileURL,Author,Title,OriginalSize,"
          "OriginalMD5,Thumbnail300KURL,Rotation")


def jpeg(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def open_images_md5(data: bytes) -> str:
    """OriginalMD5 as the official image list writes it: the base64 of the MD5 digest."""
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def write_list(path, rows) -> None:
    path.write_text("\n".join([HEADER] + [f"{i},test,{url},,,,,,{len(data)},{open_images_md5(data)},,0"
                                          for i, url, data in rows]) + "\n")


def test_image_list_md5_is_decoded_and_checked(tmp_path):
    write_list(tmp_path / "list.csv", [("000a1249af2bc5f0", "http://x/a.jpg", b"abc")])
    df = read_image_list(tmp_path / "list.csv")
    assert df["md5"].tolist() == [hashlib.md5(b"abc").hexdigest()]
    (tmp_path / "bad.csv").write_text(HEADER + "\nid1,test,http://x/a.jpg,,,,,,3,not-base64!,,0\n"
                                               "id2,test,http://x/b.jpg,,,,,,3,,,0\n")
    with pytest.raises(ValueError, match=r"2 row\(s\) without a valid OriginalMD5.*id1.*id2"):
        read_image_list(tmp_path / "bad.csv")


@pytest.mark.slow
def test_download_keeps_only_images_matching_original_md5_and_resumes(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    original0, original1 = jpeg((600, 400), (0, 100, 200)), jpeg((120, 90), (40, 100, 200))
    placeholder = jpeg((500, 374), (200, 200, 200))  # what Flickr serves, with status 200, for a deleted photo
    (www / "photo0.jpg").write_bytes(original0)
    (www / "photo1.jpg").write_bytes(placeholder)
    with LoopbackImageServer(www) as server:
        write_list(tmp_path / "list.csv", [("000a1249af2bc5f0", f"{server.url}/photo0.jpg", original0),
                                           ("000ada55d36b4bcb", f"{server.url}/photo1.jpg", original1),
                                           ("0012345678abcdef", f"{server.url}/gone.jpg", b"x")])
        images = tmp_path / "images"
        counts = download_goi_images(tmp_path / "list.csv", images, processes_count=1, thread_count=4,
                                     verbose=False)
        assert counts == {"requested": 3, "already_present": 0, "downloaded": 1, "rejected_md5": 1, "failed": 1}
        assert sorted(p.name for p in images.glob("*.jpg")) == ["000a1249af2bc5f0.jpg"]
        assert Image.open(images / "000a1249af2bc5f0.jpg").size == (384, 256)  # keep_ratio, shorter side 256
        ledger = read_integrity(images)
        assert ledger.verified == {"000a1249af2bc5f0"} and set(ledger.rejected) == {"000ada55d36b4bcb"}
        assert "OriginalMD5" in ledger.rejected["000ada55d36b4bcb"]
        ids = {i: images / f"{i}.jpg" for i in ("000a1249af2bc5f0", "000ada55d36b4bcb", "0012345678abcdef")}
        assert integrity_counts(images, ids) == {"n_images_md5_verified": 1, "n_images_md5_rejected": 1,
                                                 "n_images_unverified": 0}

        (www / "photo1.jpg").write_bytes(original1)  # the photo is back: the rerun fetches and accepts it
        again = download_goi_images(tmp_path / "list.csv", images, processes_count=1, thread_count=4,
                                    verbose=False)
        assert again == {"requested": 3, "already_present": 1, "downloaded": 1, "rejected_md5": 0, "failed": 1}
        assert Image.open(images / "000ada55d36b4bcb.jpg").size == (120, 90)  # never upscaled
        assert integrity_counts(images, ids) == {"n_images_md5_verified": 2, "n_images_md5_rejected": 0,
                                                 "n_images_unverified": 0}
        Image.new("RGB", (8, 8)).save(images / "0012345678abcdef.jpg")  # e.g. a copy from the official mirror
        assert integrity_counts(images, ids)["n_images_unverified"] == 1
