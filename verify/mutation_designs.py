"""What mutation testing runs for each ``rtl/`` file: its representative designs and its tests.

``FILE_DESIGNS`` names the designs a mutant of each file is elaborated into for the pre-check
(and proven equivalent on); they are small versions of what the tests simulate, every PE kind
and both engine organisations wherever the file is used by them. ``TEST_MAP`` lists the fastest
tests that exercise each file, in the order pytest runs them (``-x``: the fastest first, so a
mutant dies early): amaranth.sim unit tests, then cocotb on Icarus.

Run as ``python -m mulfree.verify.mutation_designs`` this module is the elaboration worker of
:mod:`mulfree.verify.mutation`: it reads one JSON request a line and answers with the RTLIL hash
of each design named, re-importing ``mulfree.rtl`` and ``mulfree.gen`` every time (the runner
edits the file between requests).
"""

import hashlib
import json
import sys
from pathlib import Path


__all__ = ["RTL_FILES", "DESIGNS", "FILE_DESIGNS", "TEST_MAP", "design_rtlil"]


RTL_FILES = ("rtl/pe.py", "rtl/tree.py", "rtl/tiles.py", "rtl/array.py", "rtl/vectorize.py",
             "rtl/shift_layouts.py", "rtl/shift_unit.py", "rtl/block.py", "rtl/regs.py",
             "rtl/postproc.py", "rtl/pool.py", "rtl/layer_setup.py", "rtl/layer_issue.py",
             "rtl/stream_loader.py", "rtl/core.py", "rtl/fold.py", "rtl/fmap_banks.py",
             "rtl/lanes.py", "rtl/engines.py", "rtl/tap_window.py", "rtl/tap_issue.py",
             "rtl/mult_pack.py", "rtl/watermark.py")

_SMALL_CORE = dict(fmap_vectors=512, weight_rows=512, acc_entries=64, max_channels=32,
                   out_vectors=8)

#: design name -> (kind, parameters); ``design_rtlil`` builds them.
DESIGNS = {
    "pe-shift": ("pe", dict(pe="shift", act_bits=5, weight_bits=3)),
    "pe-adder": ("pe", dict(pe="adder", act_bits=4)),
    "pe-mult": ("pe", dict(pe="mult", act_bits=4, weight_bits=4)),
    "postproc": ("postproc", dict(pe="shift", rows=4, cols=3)),
    "vectorizer": ("vectorizer", dict(pe="shift", rows=4, cols=3, act_bits=6)),
    "array-shift": ("array", dict(pe="shift", rows=3, cols=2, act_bits=4, weight_bits=3,
                                  max_k=9)),
    "array-adder": ("array", dict(pe="adder", rows=3, cols=2, act_bits=4, max_k=3)),
    "array-mult": ("array", dict(pe="mult", rows=2, cols=3, act_bits=4, weight_bits=4,
                                 max_k=9)),
    # The best-effort multiplier (rtl/mult_pack.py): packed DSP pairs, then LUT multipliers.
    "array-mult-pack": ("array", dict(pe="mult", rows=2, cols=4, act_bits=5, weight_bits=6,
                                      max_k=9, mult_pack=2, dsp_cols=2)),
    "array-mult-lut": ("array", dict(pe="mult", rows=2, cols=3, act_bits=4, weight_bits=4,
                                     max_k=9, dsp_cols=0)),
    "tree-shift": ("array", dict(pe="shift", rows=3, cols=2, act_bits=6, weight_bits=4, max_k=9,
                                 arch="tree", tree_levels_per_stage=1)),
    "tree-adder": ("array", dict(pe="adder", rows=5, cols=2, act_bits=4, max_k=100,
                                 arch="tree", tree_levels_per_stage=2)),
    "tree-mult": ("array", dict(pe="mult", rows=3, cols=2, act_bits=4, weight_bits=4, max_k=9,
                                arch="tree", tree_levels_per_stage=3)),
    "core-shift-array": ("core", dict(engine=dict(pe="shift", rows=4, cols=3, max_k=256),
                                      **_SMALL_CORE)),
    "core-adder-tree": ("core", dict(engine=dict(pe="adder", rows=5, cols=4, act_bits=6,
                                                 arch="tree", max_k=256),
                                     stream_width=32, **_SMALL_CORE)),
    # Interface 2.1: a shift array and a mult engine folded to one column behind one core.
    "core-shift-multc1": ("core", dict(engine=dict(pe="shift", rows=4, cols=3, max_k=128),
                                       extra_engines=[dict(pe="mult", rows=4, cols=3,
                                                           weight_bits=6, max_k=128)],
                                       engine_cols=[3, 1], **_SMALL_CORE)),
    # Interface 2.2: a square core with two feature-map banks (layer chaining).
    "core-shift-chain": ("core", dict(engine=dict(pe="shift", rows=4, cols=4, max_k=256),
                                      **dict(_SMALL_CORE, fmap_vectors=128, shortcut_vectors=128,
                                             pool_pixels=16))),
    # Interface 2.4: a square core with a 2x2 tap window (taps runs).
    "core-shift-taps": ("core", dict(engine=dict(pe="shift", rows=4, cols=4, max_k=256),
                                     taps=4, tap_line=16,
                                     **dict(_SMALL_CORE, fmap_vectors=128, shortcut_vectors=128,
                                            pool_pixels=16))),
    "fold-mult": ("fold", dict(pe="mult", rows=3, cols=4, act_bits=4, weight_bits=4, max_k=9)),
    "fold-shift": ("fold", dict(pe="shift", rows=2, cols=3, act_bits=4, weight_bits=3,
                                max_k=8)),
    "fmap-banks": ("fmap_banks", dict(engine=dict(pe="shift", rows=4, cols=4, max_k=64),
                                      **_SMALL_CORE)),
    "regs-default": ("regs", dict()),
    "shift-unit-default": ("shift_unit", dict()),
    "shift-unit-odd": ("shift_unit", dict(channels=11, height=3, width=5, act_bits=4, depth=200,
                                          kernel=5, max_shift=2)),
    "block-shift": ("block", dict(pe="shift")),
    "block-adder": ("block", dict(pe="adder")),
}

_ARRAYS = ["array-shift", "array-adder", "array-mult"]
_TREES = ["tree-shift", "tree-adder", "tree-mult"]
_CORES = ["core-shift-array", "core-adder-tree"]
_BLOCKS = ["block-shift", "block-adder"]
_UNITS = ["shift-unit-default", "shift-unit-odd"]

FILE_DESIGNS = {
    "rtl/pe.py": ["pe-shift", "pe-adder", "pe-mult"] + _ARRAYS + _TREES,
    "rtl/tiles.py": _ARRAYS + _TREES,
    "rtl/array.py": _ARRAYS + _BLOCKS + ["core-shift-taps"],
    "rtl/tree.py": _TREES,
    "rtl/vectorize.py": ["vectorizer"] + _BLOCKS,
    "rtl/shift_layouts.py": _UNITS + _BLOCKS,
    "rtl/shift_unit.py": _UNITS + _BLOCKS,
    "rtl/block.py": _BLOCKS,
    "rtl/regs.py": ["regs-default"] + _CORES,
    "rtl/postproc.py": ["postproc"] + _CORES,
    "rtl/pool.py": _CORES,
    "rtl/layer_setup.py": _CORES + ["core-shift-multc1", "core-shift-chain", "core-shift-taps"],
    "rtl/layer_issue.py": _CORES + ["core-shift-chain", "core-shift-taps"],
    "rtl/stream_loader.py": _CORES,
    "rtl/core.py": _CORES + ["core-shift-multc1", "core-shift-chain", "core-shift-taps"],
    "rtl/fold.py": ["fold-mult", "fold-shift", "core-shift-multc1"],
    "rtl/fmap_banks.py": ["fmap-banks", "core-shift-chain"],
    "rtl/lanes.py": ["core-shift-chain"],
    "rtl/engines.py": _CORES + ["core-shift-multc1", "core-shift-chain", "core-shift-taps"],
    "rtl/tap_window.py": ["core-shift-taps"],
    "rtl/tap_issue.py": ["core-shift-taps"],
    "rtl/mult_pack.py": ["array-mult-pack", "array-mult-lut"],
    "rtl/watermark.py": _CORES + ["core-shift-chain", "core-shift-taps"],
}

# The cocotb tests on Icarus, trimmed to their smallest design of each kind (a surviving mutant
# costs the whole list: the full lists would triple the run).
_ARRAY_SIM = [f"tests/test_array_sim.py::test_icarus[{d}]"
              for d in ("shift-3x7-a4w3-k9", "adder-3x7-a4-k3", "mult-1x1-a2w2-k1",
                        "shift-2x3-a4w3-k9")]
_TREE_SIM = [f"tests/test_tree_sim.py::test_icarus[{d}]"
             for d in ("adder-17x2-a8-k100-l3", "shift-3x2-a16w6-k4096-l3", "shift-16x2-a6w5-k16-l2",
                       "mult-1x1-a2w2-k1-l2")]
_UNIT_SIM = [f"tests/test_shift_unit_sim.py::test_icarus[{d}]"
             for d in ("c11h3w5a4d200k5s2", "c1h1w1a2k3s1")]
_CORE_SIM = ["tests/test_core_sim.py::test_core[shift_4x3_s64-icarus]",
             "tests/test_core_sim.py::test_core[adder_tree_5x4_s32-icarus]"]
_CORE_SHORTCUT = ["tests/test_core_shortcut_sim.py::"
                  "test_core_aligned_shortcut[adder_tree_5x4_s32-icarus]"]
_CORE_ENGINES = ["tests/test_core_engines_sim.py::test_core_engines[shift_multc1_4x3_s64-icarus]"]
_CORE_CHAIN = ["tests/test_core_chain_sim.py::test_core_chain[shift_4x4_s64-icarus]"]
# Window runs (interface 2.3): the fast datapath run, then the 4x4 shift core on Icarus.
_CORE_WINDOW = ["tests/test_core_window_sim.py::test_datapath_window_runs",
                "tests/test_core_window_sim.py::test_core_window[shift_4x4_s64-icarus]"]
_CORE_TAPS = ["tests/test_core_taps_sim.py::test_datapath_taps_runs",
              "tests/test_core_taps_sim.py::test_core_taps[shift_4x4_taps4_tree_s64-icarus]"]
_BLOCK = ["tests/test_shift_block.py", "tests/test_shift_block_sim.py"]
# The copies of the array's enable (and the skid's ready copies) in step, in amaranth.sim.
_ENABLES = ["tests/test_array_enables.py::test_copies_stay_in_step_under_backpressure"]
# The directed corner scenarios (the Icarus design) and the formal proofs of each block.
_CORE_CORNERS = ["tests/test_core_corners.py::test_core_corners[adder_tree_5x4_s32-icarus]"]
_UNIT_CORNERS = ["tests/test_shift_corners.py::test_shift_corners[c11h3w5a4d200k5s2]"]


def _proofs(*names):
    return [f"tests/test_formal.py::test_property_passes[{n}]" for n in names]

TEST_MAP = {
    "rtl/pe.py": ["tests/test_pe.py"] + _TREE_SIM + _ARRAY_SIM,
    "rtl/tiles.py": _TREE_SIM + _ARRAY_SIM,
    "rtl/array.py": _ENABLES + _ARRAY_SIM + _BLOCK + _CORE_TAPS,
    "rtl/tree.py": _TREE_SIM + ["tests/test_tree.py"],
    "rtl/vectorize.py": _BLOCK,
    "rtl/shift_layouts.py": ["tests/test_shift_unit.py"] + _UNIT_SIM + _BLOCK + _UNIT_CORNERS,
    "rtl/shift_unit.py": ["tests/test_shift_unit.py"] + _UNIT_SIM + _BLOCK + _UNIT_CORNERS,
    "rtl/block.py": _BLOCK,
    "rtl/regs.py": ["tests/test_regs.py", "tests/test_regs_sim.py::test_regs[default-icarus]",
                    "tests/test_regs_sim.py::test_regs[wide-icarus]"]
                   + _proofs("axil_regs", "axil_regs_cover") + _CORE_SIM,
    "rtl/postproc.py": ["tests/test_postproc.py",
                        "tests/test_core_corners.py::test_post_table_written_and_read_in_one_cycle"]
                       + _proofs("postproc_shift", "postproc_adder", "postproc_mult",
                                 "postproc_shift_no_shortcut", "postproc_adder_no_shortcut",
                                 "postproc_mult_no_shortcut",
                                 "postproc_stream", "postproc_stream_cover")
                       + _CORE_SIM + _CORE_CORNERS,
    "rtl/pool.py": ["tests/test_core_datapath.py"] + _proofs("pool")
                   + ["tests/test_core_pool_sim.py::test_core_pool[adder_tree_5x4_s32-icarus]"],
    "rtl/layer_setup.py": ["tests/test_layer_setup.py", "tests/test_layer_setup_tail.py",
                           "tests/test_layer_setup_chain.py", "tests/test_layer_setup_window.py",
                           "tests/test_layer_setup_taps.py"]
                          + _CORE_SIM + _CORE_CORNERS + _CORE_CHAIN,
    "rtl/layer_issue.py": ["tests/test_core_datapath.py"] + _CORE_SIM + _CORE_CORNERS
                          + _CORE_WINDOW + _CORE_TAPS,
    "rtl/stream_loader.py": ["tests/test_stream_loader.py", "tests/test_core_datapath.py"]
                            + _CORE_SIM + _CORE_CORNERS + _CORE_SHORTCUT,
    "rtl/core.py": ["tests/test_core_datapath.py"] + _CORE_SIM + _CORE_CORNERS + _CORE_SHORTCUT
                   + _CORE_ENGINES + _proofs("core_m_axis", "core_m_axis_idle") + _CORE_CHAIN,
    "rtl/fold.py": ["tests/test_fold.py"] + _CORE_ENGINES,
    "rtl/fmap_banks.py": ["tests/test_fmap_banks.py"] + _CORE_CHAIN,
    "rtl/lanes.py": ["tests/test_lanes.py"] + _CORE_WINDOW,
    "rtl/engines.py": ["tests/test_skid_buffer.py"] + _ENABLES + ["tests/test_core_datapath.py"]
                      + _CORE_SIM
                      + _CORE_ENGINES + _CORE_CHAIN
                      + _CORE_WINDOW + _CORE_TAPS,
    "rtl/tap_window.py": ["tests/test_tap_window.py"] + _CORE_TAPS,
    "rtl/tap_issue.py": _CORE_TAPS,
    "rtl/watermark.py": ["tests/test_watermark.py", "tests/test_core_datapath.py"] + _CORE_SIM
                        + _CORE_CORNERS,
    "rtl/mult_pack.py": ["tests/test_mult_mapping.py"]
                        + [f"tests/test_array_sim.py::test_icarus[{d}]"
                           for d in ("mult-2x4-a5w6-k9-mult_pack2-dsp_cols2",
                                     "mult-4x3-a8w8-k1024-dsp_cols0")],
}


def design_rtlil(name):
    """``(RTLIL text, top module name)`` of the design ``name`` of ``DESIGNS``, elaborated with
    the ``mulfree`` modules imported now (no source locations in the text)."""
    from amaranth.back import rtlil
    from mulfree.params.config import ArrayConfig
    from mulfree.params.core_config import CoreConfig
    from mulfree.params.shift_config import ShiftUnitConfig
    kind, params = DESIGNS[name]
    if kind == "pe":
        from mulfree.rtl.pe import pe_class
        cfg = ArrayConfig(**params)
        modules = [(pe_class(cfg.pe)(cfg, depth=2), "pe")]
    elif kind == "postproc":
        from mulfree.rtl.postproc import PostProcess
        modules = [(PostProcess(ArrayConfig(**params), lanes=3, channels=7), "postproc")]
    elif kind == "vectorizer":
        from mulfree.rtl.vectorize import Vectorizer
        modules = [(Vectorizer(ArrayConfig(**params)), "vectorizer")]
    elif kind == "array":
        from mulfree.gen.emit import design_modules
        cfg = ArrayConfig(**params)
        modules = design_modules(cfg)
    elif kind == "core":
        from mulfree.gen.core_manifest import core_modules
        cfg = CoreConfig.from_params(params)
        modules = core_modules(cfg)
    elif kind == "fold":
        from mulfree.rtl.fold import FoldedEngine
        cfg = ArrayConfig(**params)
        # Passes: cols / physical_cols = 2 (mult, 4 columns) and 3 (shift, 3 columns).
        modules = [(FoldedEngine(cfg, 2 if cfg.cols == 4 else 1), "fold")]
    elif kind == "fmap_banks":
        from mulfree.rtl.fmap_banks import FmapBanks
        modules = [(FmapBanks(CoreConfig.from_params(params)), "fmap_banks")]
    elif kind == "regs":
        from mulfree.rtl.regs import AxiLiteRegisters
        cfg = CoreConfig(**params)
        modules = [(AxiLiteRegisters(cfg.register_map), f"{cfg.top_name}_regs")]
    elif kind == "shift_unit":
        from mulfree.gen.shift_emit import build_shift_unit
        cfg = ShiftUnitConfig(**params)
        modules = [(build_shift_unit(cfg), cfg.top_name)]
    else:
        from mulfree.gen.block_emit import build_shift_block
        shift_cfg = ShiftUnitConfig(channels=4, height=3, width=3, act_bits=6, depth=60,
                                    kernel=3, max_shift=1)
        array_cfg = ArrayConfig(pe=params["pe"], rows=4, cols=3, act_bits=6, max_k=4)
        modules = [(build_shift_block(shift_cfg, array_cfg), "shift_block")]
    text = "".join(rtlil.convert(c, name=n, emit_src=False) for c, n in modules)
    return text, modules[0][1]


def _fresh_imports():
    """Forget every imported module that may hold code of ``rtl/`` (the file just changed)."""
    for name in [n for n in sys.modules if n.startswith(("mulfree.rtl", "mulfree.gen"))]:
        del sys.modules[name]


def _answer(request):
    if request.get("where"):
        from ..rtl import pe            # where rtl/ is imported from: the copy, not the tree
        return {"file": pe.__file__}
    _fresh_imports()
    dump = Path(request["dump"]) if request.get("dump") else None
    hashes = {}
    for name in request["designs"]:
        try:
            text, top = design_rtlil(name)
        except Exception as e:          # noqa: BLE001 -- a mutant may break elaboration
            hashes[name] = f"error: {type(e).__name__}: {' '.join(str(e).split())[:150]}"
            continue
        hashes[name] = hashlib.sha256(text.encode()).hexdigest()
        if dump is not None:
            dump.mkdir(parents=True, exist_ok=True)
            (dump / f"{name}.il").write_text(text)
            (dump / f"{name}.json").write_text(json.dumps({"top": top}))
    return {"hashes": hashes}


def _serve():
    import warnings
    warnings.simplefilter("ignore")     # a mutant's elaboration may warn; the answer is JSON
    for line in sys.stdin:
        print(json.dumps(_answer(json.loads(line))), flush=True)


if __name__ == "__main__":
    _serve()
