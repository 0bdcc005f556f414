"""Request traces: the shared Azure 2023 and Mooncake files, the vendored datasets, bad rows."""
from __future__ import annotations

import numpy as np
import pytest

import fluidllm as F
from conftest import AZURE_DIR, AZURE_SMALL, MOONCAKE_DIR, MOONCAKE_SMALL, write_azure_csv, write_mooncake_jsonl

AZ_CODE = AZURE_DIR / "AzureLLMInferenceTrace_code.csv"
AZ_CONV = AZURE_DIR / "AzureLLMInferenceTrace_conv.csv"
MC_CONV = MOONCAKE_DIR / "conversation_trace.jsonl"
MC_SYN = MOONCAKE_DIR / "synthetic_trace.jsonl"


def _need(path):
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


# Row counts and mean prompt / output tokens as printed in the traces' READMEs, with the README's
# rounding: (rows, mean prompt, decimals, mean output, decimals).
README_STATS = {
    "azure-code": (AZ_CODE, 8819, 2048, 0, 27.9, 1),
    "azure-conv": (AZ_CONV, 19366, 1155, 0, 211.1, 1),
    "mooncake-conversation": (MC_CONV, 12031, 12035, 0, 343, 0),
    "mooncake-synthetic": (MC_SYN, 3993, 15325, 0, 149, 0),
}


@pytest.mark.parametrize("name", list(README_STATS))
def test_shared_trace_counts_and_means(name):
    path, rows, mp, dp, md, dd = README_STATS[name]
    tr = F.load_trace(_need(path))
    assert len(tr) == rows
    assert tr.prefill.size == rows and tr.decode.size == rows
    assert round(float(np.mean(tr.prefill)), dp) == mp
    assert round(float(np.mean(tr.decode)), dd) == md
    assert tr.arrival_ms[0] == 0.0 and np.all(np.diff(tr.arrival_ms) >= 0)
    assert tr.source["format"] == ("mooncake" if path.suffix == ".jsonl" else "azure")
    lens = tr.lengths()
    assert lens.mean_prefill == pytest.approx(np.mean(tr.prefill))
    assert tr.arrival().rate_per_s == pytest.approx(tr.rate_per_s)


def test_azure_conv_rate_and_span_from_readme():
    tr = F.load_trace(_need(AZ_CONV))
    # README: 18:15:47 -> 19:14:08 (3,502 s), 5.53 req/s
    assert tr.arrival_ms[-1] / 1000 == pytest.approx(3502, abs=1.0)
    assert round(tr.rate_per_s, 2) == 5.53


def test_azure_timestamps_keep_100ns_resolution():
    tr = F.load_trace(_need(AZ_CONV))
    # rows 1 and 2 of the file: 18:15:46.6805900 and 18:15:50.9951690
    assert tr.arrival_ms[1] == pytest.approx(4314.579, abs=1e-6)


def test_explicit_loaders_agree_with_load_trace():
    a = F.load_azure_trace(_need(AZ_CODE))
    b = F.load_trace(AZ_CODE, "azure")
    assert np.array_equal(a.prefill, b.prefill) and np.array_equal(a.arrival_ms, b.arrival_ms)
    c = F.load_mooncake_trace(_need(MC_SYN))
    assert np.array_equal(c.decode, F.load_trace(MC_SYN).decode)


@pytest.mark.parametrize("dataset,shared", [("azure-conv-2023", AZ_CONV), ("azure-code-2023", AZ_CODE)])
def test_vendored_dataset_equals_shared_csv(dataset, shared):
    v = F.load_trace(dataset=dataset)
    s = F.load_trace(_need(shared))
    assert v.source == {"dataset": dataset}
    assert len(v) == len(s)
    assert np.array_equal(v.prefill, s.prefill)
    assert np.array_equal(v.decode, s.decode)
    assert np.max(np.abs(v.arrival_ms - s.arrival_ms)) <= 1e-3


def test_vendored_datasets_listed():
    assert set(F.DATASETS) == {"azure-conv-2023", "azure-code-2023", "mooncake-conv-2000"}
    assert len(F.load_trace(dataset="azure-conv-2023")) == 19366
    assert len(F.load_trace(dataset="azure-code-2023")) == 8819
    moon = F.load_trace(dataset="mooncake-conv-2000")  # its attribution file states 2,000 rows over 669 s
    assert len(moon) == 2000 and 668_000 <= moon.arrival_ms[-1] <= 670_000


# ------------------------------------------------------------------------------ small files


def test_small_azure_file(azure_small):
    tr = F.load_trace(azure_small)
    assert np.array_equal(tr.prefill, [r[1] for r in AZURE_SMALL])
    assert np.array_equal(tr.decode, [r[2] for r in AZURE_SMALL])
    assert np.allclose(tr.arrival_ms, [0.0, 4314.579, 4519.41, 6319.41], atol=1e-9)


def test_small_mooncake_file_sorted_and_shifted(tmp_path):
    rows = [(50.0, 3, 1), (10.0, 7, 2), (30.0, 5, 0)]
    tr = F.load_trace(write_mooncake_jsonl(tmp_path / "t.jsonl", rows))
    assert np.array_equal(tr.arrival_ms, [0.0, 20.0, 40.0])
    assert np.array_equal(tr.prefill, [7, 5, 3]) and np.array_equal(tr.decode, [2, 0, 1])


def test_fluidllm_format_detected(tmp_path):
    p = tmp_path / "own.csv"
    p.write_text("arrival_ms,prefill,decode\n0,10,2\n5.5,20,0\n")
    tr = F.load_trace(p)
    assert tr.source["format"] == "fluidllm"
    assert np.array_equal(tr.arrival_ms, [0.0, 5.5])


@pytest.mark.parametrize("fmt", ["azure", "mooncake", "fluidllm"])
def test_negative_tokens_name_the_row(tmp_path, fmt):
    if fmt == "azure":
        p = write_azure_csv(tmp_path / "bad.csv", [("2023-11-16 18:15:46.0", 10, 2),
                                                   ("2023-11-16 18:15:47.0", -5, 3)])
        row, col = 3, "ContextTokens"  # line 3 of the file (line 1 is the header)
    elif fmt == "mooncake":
        p = write_mooncake_jsonl(tmp_path / "bad.jsonl", [(0, 10, 2), (1, 4, 1), (2, 5, -7)])
        row, col = 3, "output_length"
    else:
        p = tmp_path / "bad.csv"
        p.write_text("arrival_ms,prefill,decode\n0,10,2\n1,-5,3\n")
        row, col = 3, "prefill"
    with pytest.raises(F.ModelError) as ei:
        F.load_trace(p)
    msg = str(ei.value)
    assert f"row {row}" in msg and col in msg and p.name in msg
    assert ("-5" in msg) or ("-7" in msg)


def test_bad_trace_files(tmp_path):
    with pytest.raises(F.ModelError, match="no such trace file"):
        F.load_trace(tmp_path / "missing.csv")
    with pytest.raises(F.ModelError, match="no such trace file"):
        F.load_trace(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"timestamp": 0, "input_length": 5}\n')
    with pytest.raises(F.ModelError, match="line 1"):
        F.load_trace(bad)
    hdr = tmp_path / "hdr.csv"
    hdr.write_text("TIME,Context,Generated\nx,1,2\n")
    with pytest.raises(F.ModelError, match="header"):
        F.load_trace(hdr)
    with pytest.raises(F.ModelError, match="format"):
        F.load_trace(hdr, "parquet")
    with pytest.raises(F.ModelError, match="dataset"):
        F.load_trace(dataset="azure-2099")
