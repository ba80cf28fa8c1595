"""Tiny metadata files in each training source's official format, written by the tests (never copied)."""
import bz2
import csv
import gzip
import hashlib
from pathlib import Path

from otterlib.data.sources import wit, yfcc15m


def _open_text(path: Path, mode: str = "wt"):
    """``path`` for writing text, compressed as its suffix says (``.bz2``, ``.gz``) like the publishers' files."""
    opener = {".bz2": bz2.open, ".gz": gzip.open}.get(path.suffix, open)
    return opener(path, mode, encoding="utf-8", newline="")


def yfcc_row(line: int, photo: int, title: str = "", description: str = "", marker: str = "0",
             url: str | None = None) -> str:
    """One line of the 25-column YFCC100M metadata (tab-separated, URL-encoded text, no header)."""
    fields = dict.fromkeys(yfcc15m.METADATA_COLUMNS, "")
    fields.update(line_number=str(line), photo_id=str(photo), photo_hash=hashlib.md5(str(photo).encode()).hexdigest(),
                  user_nsid="12345678@N00", user_nickname="someone", date_taken="2012-02-16 09:56:37.0",
                  date_uploaded="1331840483", capture_device="Canon+PowerShot", title=title, description=description,
                  user_tags="beach,sea", page_url=f"http://www.flickr.com/photos/12345678@N00/{photo}/",
                  download_url=f"http://farm8.staticflickr.com/7205/{photo}_abc.jpg" if url is None else url,
                  license_name="Attribution License", marker=marker)
    return "\t".join(fields.values()) + "\n"


def write_yfcc(folder: Path, metadata_rows: list[str], listed: list[tuple[int, int]],
               subset_name: str = "yfcc100m_subset_data.tsv", metadata_name: str = "yfcc100m_dataset.bz2"
               ) -> tuple[Path, Path]:
    """The YFCC100M metadata and OpenAI's subset list (``line number<TAB>photo id<TAB>photo hash`` with a row of
    column names) of the ``listed`` (line, photo id) pairs; returns (subset list, metadata)."""
    meta, subset = folder / metadata_name, folder / subset_name
    with _open_text(meta) as f:
        f.writelines(metadata_rows)
    with _open_text(subset) as f:
        f.write("line_number\tphotoid\tphoto_hash\n" + "".join(
            f"{line}\t{photo}\t{hashlib.md5(str(photo).encode()).hexdigest()}\n" for line, photo in listed))
    return subset, meta


def write_wit(path: Path, rows: list[dict[str, str]]) -> Path:
    """A gzipped WIT TSV: the 17-column header row, then ``rows`` (fields not given take Half Dome's page)."""
    with _open_text(path) as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(wit.COLUMNS)
        for r in rows:
            full = dict.fromkeys(wit.COLUMNS, "")
            full.update(page_url="https://en.wikipedia.org/wiki/Half_Dome", page_title="Half Dome",
                        original_height="3564", original_width="2748", is_main_image="true",
                        attribution_passes_lang_id="true", page_changed_recently="true",
                        context_page_description="Half Dome is a granite dome.\nIt rises above Yosemite Valley.")
            full.update(r)
            writer.writerow(full.values())
    return path


def wit_row(language: str, image: str, mime: str = "image/jpeg", reference: str = "", attribution: str = "",
            url: str | None = None) -> dict[str, str]:
    """The fields of one WIT row that the parser reads (``url``: the image URL, default Wikimedia's for ``image``)."""
    return {"language": language, "image_url": url or f"https://upload.wikimedia.org/wikipedia/commons/{image}",
            "mime_type": mime, "caption_reference_description": reference,
            "caption_attribution_description": attribution}
