"""GPU benchmark at real NLA size: a Qwen2.5-7B-shaped AV and AR (random weights, bfloat16; shapes are
what cost), 16 positions × 120 new tokens as one batch vs one by one, and the achieved decode step
time beside the memory-bandwidth limit (weight bytes / HBM bandwidth).

`--backend vllm` runs the AV side on vLLM instead (prompt embeddings with the injected row, as the
worker's vLLM backend feeds it; the random weights are saved to a temporary directory for it to
load), `--backend both` runs the two one after the other; the AR always runs on transformers.

Run on a CUDA machine: `.venv/bin/python benchmarks/gpu_shapes.py [--layers 28] [--tokens 120]
[--backend hf|vllm|both]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.nla.capture import capture_block_output
from workers.nla.decode import DecodeSpec, generate
from workers.nla.inject import embeddings_with_injection, rescale

#: Peak HBM bandwidth by device-name fragment, bytes/s (vendor figures).
HBM = {"H200": 4.8e12, "H100 PCIe": 2.0e12, "H100": 3.35e12, "A100": 2.0e12}
PROMPT_TOKENS = 64
MARKER = 40
LAYER = 20


class _Silent:
    """Tokenizer stand-in: the benchmark generates a fixed number of tokens, no text is read."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return ""


def qwen7b(layers: int):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=layers,
        num_attention_heads=28,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return model.eval()


def sync_time(fn):  # type: ignore[no-untyped-def]
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start, result


def bench_av(layers: int, tokens: int, positions: int) -> None:
    name = torch.cuda.get_device_name()
    av = qwen7b(layers)
    weight_bytes = sum(p.numel() * p.element_size() for p in av.parameters())
    bandwidth = next((v for k, v in HBM.items() if k in name), None)
    print(f"device: {name}; AV {weight_bytes / 1e9:.1f} GB bf16, {layers} layers")
    prompt = torch.randint(0, 150000, (1, PROMPT_TOKENS), device="cuda")
    vectors = rescale(torch.randn(positions, 3584, device="cuda"), 150.0)
    spec = DecodeSpec(max_new_tokens=tokens)

    def run(rows: torch.Tensor) -> None:
        embeds = embeddings_with_injection(av, prompt.expand(rows.shape[0], -1), MARKER, rows)
        generate(av, _Silent(), spec, inputs_embeds=embeds)

    run(vectors[:2])  # warm-up: kernels, allocator
    batched, _ = sync_time(lambda: run(vectors))
    sequential, _ = sync_time(lambda: [run(vectors[i : i + 1]) for i in range(positions)])
    print(
        f"[AV] {positions} x {tokens} tokens: batched {batched:.1f} s, sequential "
        f"{sequential:.1f} s, ratio {sequential / batched:.1f}x"
    )
    limit = f"{weight_bytes / bandwidth * 1e3:.2f} ms" if bandwidth else "unknown bandwidth"
    print(
        f"[AV] decode step: batch of {positions} {batched / tokens * 1e3:.2f} ms, batch of 1 "
        f"{sequential / (tokens * positions) * 1e3:.2f} ms; bandwidth limit (weights / HBM) {limit}"
    )


def bench_av_vllm(layers: int, tokens: int, positions: int) -> None:
    """The same AV batch through vLLM's offline engine, fed prompt embeddings `[T, d]`."""
    import tempfile

    from vllm import LLM, SamplingParams

    av = qwen7b(layers)
    prompt = torch.randint(0, 150000, (1, PROMPT_TOKENS), device="cuda")
    vectors = rescale(torch.randn(positions, 3584, device="cuda"), 150.0)
    embeds = embeddings_with_injection(av, prompt.expand(positions, -1), MARKER, vectors).cpu()
    with tempfile.TemporaryDirectory() as directory:
        av.save_pretrained(directory)
        del av
        torch.cuda.empty_cache()
        llm = LLM(
            model=directory,
            skip_tokenizer_init=True,
            enable_prompt_embeds=True,
            dtype="bfloat16",
            gpu_memory_utilization=0.5,
            max_model_len=PROMPT_TOKENS + tokens + 8,
        )
    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True, detokenize=False)

    def run(rows: torch.Tensor) -> None:
        llm.generate([{"prompt_embeds": e} for e in rows], params, use_tqdm=False)

    run(embeds[:2])  # warm-up
    batched, _ = sync_time(lambda: run(embeds))
    sequential, _ = sync_time(lambda: [run(embeds[i : i + 1]) for i in range(positions)])
    print(
        f"[AV vllm] {positions} x {tokens} tokens: batched {batched:.1f} s, sequential "
        f"{sequential:.1f} s, ratio {sequential / batched:.1f}x; decode step of the batch "
        f"{batched / tokens * 1e3:.2f} ms"
    )


def bench_ar(positions: int) -> None:
    ar = qwen7b(LAYER + 1).model
    texts = torch.randint(0, 150000, (positions, 160), device="cuda")
    capture_block_output(ar, texts[:2], LAYER)  # warm-up
    one, _ = sync_time(
        lambda: [capture_block_output(ar, texts[i : i + 1], LAYER) for i in range(positions)]
    )
    many, _ = sync_time(lambda: capture_block_output(ar, texts, LAYER))
    print(
        f"[AR] {positions} texts x 160 tokens: batched {many * 1e3:.0f} ms, sequential "
        f"{one * 1e3:.0f} ms, ratio {one / many:.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--tokens", type=int, default=120)
    parser.add_argument("--positions", type=int, default=16)
    parser.add_argument("--backend", choices=("hf", "vllm", "both"), default="hf")
    args = parser.parse_args()
    if args.backend in ("hf", "both"):
        bench_av(args.layers, args.tokens, args.positions)
        torch.cuda.empty_cache()
    if args.backend in ("vllm", "both"):
        bench_av_vllm(args.layers, args.tokens, args.positions)
        torch.cuda.empty_cache()
    bench_ar(args.positions)


if __name__ == "__main__":
    main()
