"""Open Images test-image download through img2dataset from a loopback server."""
import pytest
from PIL import Image

from otterlib.data.goi_images import download_goi_images
from otterlib.data.loopback import LoopbackImageServer


@pytest.mark.slow
def test_download_names_files_by_image_id_and_resumes(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    for i, size in enumerate([(600, 400), (120, 90)]):
        Image.new("RGB", size, (40 * i, 100, 200)).save(www / f"photo{i}.jpg")
    with LoopbackImageServer(www) as server:
        rows = ["ImageID,Subset,OriginalURL,OriginalLandingURL,License,AuthorProfileURL,Author,Title,"
                "OriginalSize,OriginalMD5,Thumbnail300KURL,Rotation"]
        for image_id, name in (("000a1249af2bc5f0", "photo0.jpg"), ("000ada55d36b4bcb", "photo1.jpg"),
                               ("0012345678abcdef", "gone.jpg")):
            rows.append(f"{image_id},test,{server.url}/{name},,,,,,1,x,,0")
        (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
        images = tmp_path / "images"
        counts = download_goi_images(tmp_path / "list.csv", images, processes_count=1, thread_count=4,
                                     verbose=False)
        assert counts == {"requested": 3, "already_present": 0, "downloaded": 2, "failed": 1}
        assert sorted(p.name for p in images.iterdir()) == ["000a1249af2bc5f0.jpg", "000ada55d36b4bcb.jpg"]
        assert Image.open(images / "000a1249af2bc5f0.jpg").size == (384, 256)  # keep_ratio, shorter side 256
        assert Image.open(images / "000ada55d36b4bcb.jpg").size == (120, 90)   # never upscaled
        again = download_goi_images(tmp_path / "list.csv", images, image_ids=["000a1249af2bc5f0"], verbose=False)
        assert again == {"requested": 1, "already_present": 1, "downloaded": 0, "failed": 0}
