"""`crossmae visualize CHECKPOINT (--image FILE... | --data DIR --num N) --output FILE.png`.

Reconstructions by default; `--per-block`, `--attention` or `--fusion-weights` draw the
per-decoder-block terms, the decoder attention, or the fusion weight heatmap instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from crossmae.errors import CrossMAEError

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

    from crossmae.models.autoencoder import MaskedAutoencoder
    from crossmae.models.masking import Masking
    from crossmae.viz.reconstruction import Reconstruction
    from crossmae.viz.trace import DecoderTrace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a crossmae checkpoint or one of the authors'")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--image", nargs="+", metavar="FILE", help="image files to reconstruct")
    source.add_argument(
        "--data",
        metavar="PATH",
        help="an image folder (PATH/<split>/<class>/*, PATH/<class>/* or PATH/*), tar shards, "
        "or 'builtin' for the demo set shipped with the package (the default)",
    )
    parser.add_argument("--split", default="test", help="split of --data (default test)")
    parser.add_argument("--num", type=int, default=4, help="images drawn from --data (default 4)")
    parser.add_argument("--output", required=True, help="where to write the figure (.png)")
    parser.add_argument(
        "--mask-ratio", type=float, help="fraction of patches masked (default: the model's)"
    )
    parser.add_argument(
        "--decode-all",
        action="store_true",
        help="decode every masked patch, even for a CrossMAE model trained with γ < mask ratio",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the image draw and masking")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument(
        "--per-block",
        action="store_true",
        help="the reconstruction split into one additive term per decoder block",
    )
    kind.add_argument(
        "--attention",
        action="store_true",
        help="CrossMAE: each decoder block's attention from query patches to the visible "
        "tokens; MAE: the share of mask tokens' attention on visible vs mask tokens per block",
    )
    kind.add_argument(
        "--fusion-weights",
        action="store_true",
        help="heatmap of the fusion weights (decoder block x encoder layer); needs no images",
    )
    parser.add_argument(
        "--patch",
        type=int,
        nargs="+",
        metavar="IDX",
        help="--attention: raster indices of the query patches (they are made masked)",
    )
    parser.add_argument(
        "--queries",
        type=int,
        default=2,
        help="--attention: random decoded query patches per image (default 2)",
    )


def run(args: argparse.Namespace) -> int:
    from crossmae.models.autoencoder import MaskedAutoencoder
    from crossmae.models.checkpoint import load_model
    from crossmae.viz.figure import save_png

    if Path(args.output).suffix.lower() != ".png":
        raise CrossMAEError(f"--output must name a .png file, got {args.output}")
    model = load_model(args.checkpoint).eval()
    if not isinstance(model, MaskedAutoencoder):
        raise CrossMAEError(
            f"{args.checkpoint} holds an encoder without its decoder; visualize needs a "
            "pretraining checkpoint (ours, or the authors' with the decoder)"
        )
    name = "/".join(Path(args.checkpoint).parts[-2:])  # run folder / file
    fig = fusion_heatmap(model, name) if args.fusion_weights else image_figure(model, name, args)
    print(f"wrote {save_png(fig, args.output)}")
    return 0


def fusion_heatmap(model: MaskedAutoencoder, name: str) -> Figure:
    from crossmae.viz.fusion import fusion_weights
    from crossmae.viz.plots import fusion_figure

    matrix, columns = fusion_weights(model)
    kind = model.config.fusion_weights
    return fusion_figure(matrix, columns, f"{name}: fusion weights ({kind})")


def image_figure(model: MaskedAutoencoder, name: str, args: argparse.Namespace) -> Figure:
    """Load the images, mask them, trace the decoder, and draw the requested view."""
    import torch

    from crossmae.data.transforms import size_pair
    from crossmae.viz.images import load_files, sample_dataset
    from crossmae.viz.reconstruction import reconstruct, zero_prediction_psnr
    from crossmae.viz.trace import make_noise, trace_decoder

    c = model.config
    size = size_pair(c.img_size)
    if args.image:
        batch = load_files(args.image, size, c.in_chans)
    else:  # no --data: the built-in demo set, as the other commands
        data = args.data or "builtin"
        batch = sample_dataset(data, args.split, args.num, args.seed, size, c.in_chans)
    imgs = batch.imgs
    patches = check_patches(args, model)
    noise = make_noise(len(imgs), c.num_patches, args.seed, decode=patches)
    with torch.no_grad():
        trace = trace_decoder(model, imgs, masking(model, noise, args))
        rec = reconstruct(trace, imgs)
        floor = zero_prediction_psnr(trace, imgs)
    report_psnr(batch.names, rec, floor, c.norm_pix_loss)
    title = describe(name, model, trace, rec)
    if args.per_block:
        return per_block(trace, imgs, rec, title)
    if args.attention:
        return attention(trace, rec, title, patches, args)
    from crossmae.viz.plots import reconstruction_figure

    return reconstruction_figure(rec, title)


def check_patches(args: argparse.Namespace, model: MaskedAutoencoder) -> list[int]:
    if not args.patch:
        return []
    if not (args.attention and model.is_cross):
        raise CrossMAEError("--patch chooses query patches for --attention on a CrossMAE model")
    bad = [i for i in args.patch if not 0 <= i < model.config.num_patches]
    if bad:
        raise CrossMAEError(
            f"patch {bad[0]} does not exist; patches are numbered 0 to "
            f"{model.config.num_patches - 1} in raster order"
        )
    return list(dict.fromkeys(args.patch))


def masking(model: MaskedAutoencoder, noise: torch.Tensor, args: argparse.Namespace) -> Masking:
    """The masking for `noise`: the model's ratios unless overridden on the command line."""
    p = model.config.mask_ratio if args.mask_ratio is None else args.mask_ratio
    if not 0 < p < 1:
        raise CrossMAEError(f"--mask-ratio must be between 0 and 1, got {p}")
    gamma = p if args.decode_all and model.is_cross else None
    m = model.mask(noise.shape[0], noise.device, noise, p, gamma)
    if m.ids_decoded.shape[1] < len(args.patch or []):
        raise CrossMAEError(
            f"{len(args.patch)} query patches but only {m.ids_decoded.shape[1]} are decoded; "
            "raise --mask-ratio or pass --decode-all"
        )
    return m


def report_psnr(
    names: list[str], rec: Reconstruction, floor: torch.Tensor, norm_pix_loss: bool
) -> None:
    n = rec.ids_pred.shape[1]
    for name, psnr in zip(names, rec.psnr.tolist(), strict=True):
        print(f"{name}: PSNR {psnr:.2f} dB on the {n} decoded masked patches")
    print(f"mean masked-patch PSNR: {rec.psnr.mean():.2f} dB over {len(names)} images")
    fill = "its true mean value" if norm_pix_loss else "the data set's mean colour"
    print(f"  reference: filling each of those patches with {fill}: {floor.mean():.2f} dB")


def describe(name: str, model: MaskedAutoencoder, trace: DecoderTrace, rec: Reconstruction) -> str:
    """Figure title: what was masked and decoded, how predictions were de-normalised."""
    c, m = model.config, trace.masking
    n_masked = m.num_patches - m.ids_visible.shape[1]
    kind = f"CrossMAE (γ={c.prediction_ratio:g})" if model.is_cross else "MAE"
    title = (
        f"{name}, {kind}: {n_masked}/{m.num_patches} patches masked, "
        f"{m.ids_decoded.shape[1]} decoded; masked-patch PSNR {rec.psnr.mean():.2f} dB."
    )
    if c.norm_pix_loss:
        title += " Predictions de-normalised with each ground-truth patch's mean and std"
        title += " (norm_pix_loss)."
    return title


def per_block(trace: DecoderTrace, imgs: torch.Tensor, rec: Reconstruction, title: str) -> Figure:
    from crossmae.viz.per_block import per_block_images
    from crossmae.viz.plots import per_block_figure

    cumulative, contributions = per_block_images(trace, imgs)
    return per_block_figure(rec, cumulative, contributions, f"Per-block terms. {title}")


def attention(
    trace: DecoderTrace,
    rec: Reconstruction,
    title: str,
    patches: list[int],
    args: argparse.Namespace,
) -> Figure:
    from crossmae.viz.attention import cross_attention_maps, mae_attention_mass
    from crossmae.viz.plots import attention_figure, attention_mass_figure

    if not trace.model.is_cross:
        mass = mae_attention_mass(trace)
        print("block  to visible  to mask tokens  to [CLS]")
        for i, shares in enumerate(zip(mass.to_visible, mass.to_masked, mass.to_cls, strict=True)):
            print(f"{i + 1:5d}  " + "  ".join(f"{v:10.3f}" for v in shares))
        m = trace.masking
        title = (
            f"MAE decoder: where the mask tokens attend (mean over heads, masked queries and "
            f"{m.ids_visible.shape[0]} images; {m.ids_masked.shape[1]}/{m.num_patches} masked)"
        )
        uniform = m.ids_visible.shape[1] / (m.num_patches + 1)  # keys: [CLS] + all patches
        return attention_mass_figure(mass, title, uniform)
    queries = pick_queries(trace, patches, args.queries, args.seed)
    title = f"Cross-attention of decoded patches (cyan) over visible tokens, head mean. {title}"
    return attention_figure(
        rec, cross_attention_maps(trace), queries, trace.model.patch_size, title
    )


def pick_queries(
    trace: DecoderTrace, patches: list[int], per_image: int, seed: int
) -> list[tuple[int, int, int]]:
    """(image, prediction row, patch) triples: the chosen patches or random decoded ones."""
    import random

    ids = trace.ids_pred.tolist()
    if not patches and per_image < 1:
        raise CrossMAEError(f"--queries must be at least 1, got {per_image}")
    rng = random.Random(seed)
    out = []
    for b, row in enumerate(ids):
        chosen = patches or sorted(rng.sample(row, min(per_image, len(row))))
        out += [(b, row.index(p), p) for p in chosen]
    return out
