"""Make a tiny, deterministic, random-weight Llama-style model for tests.

    python3 make_tiny_model.py OUTDIR [--seed N]

What it makes (about 2.3 MB), so that tests and the demo never download weights:

- ``config.json``: ``LlamaForCausalLM``, hidden 128, 2 layers, 4 attention heads / 2 KV heads,
  head_dim 32 (vLLM's CPU attention backend needs head_dim >= 32), intermediate 256,
  tied embeddings, vocabulary 2048, 512 positions, float32.
- ``model.safetensors``: fp32 weights, written here by hand (no torch, no safetensors package).
  Weights are uniform (embedding std 0.02, projections std 0.1) from ``random.Random(seed + 1)``;
  norm weights are 1. The embedding rows of the special tokens and of byte tokens that are not
  printable ASCII are zero, so their logits are exactly 0 while about half of the other logits are
  positive: greedy decoding never picks ``<|im_end|>`` or a lone UTF-8 fragment, and a completion or
  chat request returns ``max_tokens`` tokens of readable gibberish (``finish_reason: length``)
  instead of an empty reply. To see a ``stop`` finish, pass ``stop`` strings.
- ``tokenizer.json``: byte-level BPE (vocabulary 2048 including 256 byte symbols and 3 special tokens:
  ``<|endoftext|>`` 0, ``<|im_start|>`` 1, ``<|im_end|>`` 2) trained locally with the ``tokenizers``
  package on an English-and-code corpus generated inside this script.
- ``tokenizer_config.json``, ``special_tokens_map.json``, ``chat_template.jinja``: ChatML chat template,
  eos ``<|im_end|>``, pad ``<|endoftext|>``, no BOS added to prompts.
- ``generation_config.json``.

Needs only the Python standard library and ``tokenizers``: it runs in a controller virtual
environment without torch or transformers. The output is byte-identical between runs (same
``tokenizers`` version): the weights come from Python's Mersenne Twister through ``random()`` and
exact IEEE arithmetic only (no libm calls), and tokenizer training runs single-threaded.
"""

import argparse
import json
import os
import random
import struct
import sys
from array import array

# Single-threaded, deterministic tokenizer training: set before ``tokenizers`` starts its pool.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

VOCAB_SIZE = 2048
HIDDEN = 128
INTERMEDIATE = 256
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 32
MAX_POSITIONS = 512
RMS_NORM_EPS = 1e-6
ROPE_THETA = 10000.0
EMBED_STD = 0.02  # embedding (and, tied, LM head)
PROJ_STD = 0.1  # attention and MLP projections: large enough that greedy output is not one token repeated

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "<|endoftext|>", "<|endoftext|>", "<|im_end|>"

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

WORDS = (
    "the a an of to and in is it that for on with as was be by this are at from or have not but "
    "model models serve server service host hosts unit units token tokens request requests response "
    "inference engine cache caches memory worker workers process processes start stop restart health "
    "metrics key keys secret config configuration file files path paths image images disk boot upgrade "
    "rollback version revision weights layer layers attention head heads vector matrix value values "
    "hello world python shell system network port address user users group groups read write run "
    "time fast slow small large tiny random test tests check checks pass fail error errors warning "
    "chat message messages assistant role content system prompt completion completions stream "
    "answer question what when where which who why how can will would should could may must "
    "one two three four five six seven eight nine ten first second last next new old good bad "
    "data list dict string number integer float true false none null empty full open close"
).split()

CODE_LINES = (
    "def {w}_{v}(self, {w}):",
    "    return self.{w} + {n}",
    "    if {w} is None:",
    '        raise ValueError("{w} {v}")',
    "for {w} in range({n}):",
    "    {w}[{n}] = {v}({w})",
    "import {w}",
    "from {w} import {v}",
    "class {W}{V}:",
    '{w} = {{"{v}": {n}, "{w}": [{n}, {m}]}}',
    'print(f"{w}={{{v}}}")',
    "# {w} {v} {w}",
    "$ {w} --{v} {n}",
    "{w}: {v}",
    "  - name: {w} {v}",
    '    {w}: "{v}"',
)


SYLLABLES = (
    "ka ri to na me shi lo ve tra po lin dar qu el or ax um ber ton ist ent ion al ic "
    "pre con dis ful ness ing ed ly er est ous ive ize str ph th ch wh gr bl cr fl sp"
).split()


def build_corpus(rng, sentences=6000, code_lines=4000):
    """Return a list of lines, the same for the same ``rng`` state on every machine."""
    # Made-up words widen the corpus so that BPE training fills the whole vocabulary.
    made_up = ["".join(SYLLABLES[rng.randrange(len(SYLLABLES))] for _unused in range(rng.randrange(2, 5))) for _unused in range(1500)]
    lexicon = list(WORDS) + made_up
    lines = []
    for _unused in range(sentences):
        n = rng.randrange(4, 16)
        words = [lexicon[rng.randrange(len(lexicon))] for _unused in range(n)]
        words[0] = words[0].capitalize()
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randrange(0, 10000)))
        end = ".?!"[rng.randrange(3)]
        lines.append(" ".join(words) + end)
    for _unused in range(code_lines):
        tmpl = CODE_LINES[rng.randrange(len(CODE_LINES))]
        w = WORDS[rng.randrange(len(WORDS))]
        v = WORDS[rng.randrange(len(WORDS))]
        lines.append(tmpl.format(w=w, v=v, W=w.capitalize(), V=v.capitalize(), n=rng.randrange(100), m=rng.randrange(1000)))
    return lines


def train_tokenizer(lines):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(lines, trainer=trainer, length=len(lines))
    for i, t in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(t) != i:
            raise RuntimeError("special token %s has id %s, expected %d" % (t, tok.token_to_id(t), i))
    if tok.get_vocab_size() != VOCAB_SIZE:
        raise RuntimeError("tokenizer vocabulary %d != %d" % (tok.get_vocab_size(), VOCAB_SIZE))
    return tok


def uniform_tensor(rng, count, std=PROJ_STD):
    """``count`` float32 values uniform in [-a, a), a = std*sqrt(3): exact IEEE ops only."""
    a = std * 3.0**0.5  # ** 0.5 is correctly rounded sqrt
    r = rng.random
    return array("f", [(2.0 * r() - 1.0) * a for _unused in range(count)])


def byte_level_decoder():
    """GPT-2's byte-to-unicode table, reversed: the character of a byte-level token -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def silent_token_ids(tok):
    """Ids whose embedding row is zeroed: special tokens and tokens with bytes that are not
    printable ASCII (control bytes, lone UTF-8 fragments). Their logits are exactly 0, so greedy
    decoding from this random model yields readable gibberish and never stops by itself."""
    dec = byte_level_decoder()
    ok = set(range(32, 127)) | {10}
    silent = set()
    for token, tid in tok.get_vocab(with_added_tokens=True).items():
        if token in SPECIAL_TOKENS or any(dec.get(ch, -1) not in ok for ch in token):
            silent.add(tid)
    return sorted(silent)


def make_weights(rng, silent_ids):
    """Return an ordered list of (name, shape, array('f'))."""
    tensors = []

    def add(name, shape, values):
        tensors.append((name, list(shape), values))

    embed = uniform_tensor(rng, VOCAB_SIZE * HIDDEN, EMBED_STD)
    zeros = array("f", [0.0] * HIDDEN)
    for tid in silent_ids:
        embed[tid * HIDDEN : (tid + 1) * HIDDEN] = zeros
    add("model.embed_tokens.weight", (VOCAB_SIZE, HIDDEN), embed)
    ones = array("f", [1.0] * HIDDEN)
    for i in range(LAYERS):
        p = "model.layers.%d." % i
        add(p + "input_layernorm.weight", (HIDDEN,), ones)
        add(p + "self_attn.q_proj.weight", (HEADS * HEAD_DIM, HIDDEN), uniform_tensor(rng, HEADS * HEAD_DIM * HIDDEN))
        add(p + "self_attn.k_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN), uniform_tensor(rng, KV_HEADS * HEAD_DIM * HIDDEN))
        add(p + "self_attn.v_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN), uniform_tensor(rng, KV_HEADS * HEAD_DIM * HIDDEN))
        add(p + "self_attn.o_proj.weight", (HIDDEN, HEADS * HEAD_DIM), uniform_tensor(rng, HIDDEN * HEADS * HEAD_DIM))
        add(p + "post_attention_layernorm.weight", (HIDDEN,), ones)
        add(p + "mlp.gate_proj.weight", (INTERMEDIATE, HIDDEN), uniform_tensor(rng, INTERMEDIATE * HIDDEN))
        add(p + "mlp.up_proj.weight", (INTERMEDIATE, HIDDEN), uniform_tensor(rng, INTERMEDIATE * HIDDEN))
        add(p + "mlp.down_proj.weight", (HIDDEN, INTERMEDIATE), uniform_tensor(rng, HIDDEN * INTERMEDIATE))
    add("model.norm.weight", (HIDDEN,), ones)
    return tensors


def write_safetensors(path, tensors):
    """Write the safetensors format: u64 LE header length, JSON header, raw LE data."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    blobs = []
    for name, shape, values in sorted(tensors, key=lambda t: t[0]):
        if sys.byteorder != "little":
            values = array("f", values)
            values.byteswap()
        blob = values.tobytes()
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    hjson = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for blob in blobs:
            f.write(blob)


def write_json(path, obj):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("outdir", help="directory to write the model into (created if missing)")
    ap.add_argument("--seed", type=int, default=20240601, help="PRNG seed (default %(default)s)")
    args = ap.parse_args(argv)

    os.makedirs(args.outdir, exist_ok=True)

    def out(name):
        return os.path.join(args.outdir, name)

    rng = random.Random(args.seed)
    tok = train_tokenizer(build_corpus(rng))
    # Tokenizer.save() writes compact JSON; re-dump it with a fixed layout.
    tok_json = json.loads(tok.to_str())
    write_json(out("tokenizer.json"), tok_json)

    ids = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": ids[BOS_TOKEN],
        "eos_token_id": ids[EOS_TOKEN],
        "pad_token_id": ids[PAD_TOKEN],
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": EMBED_STD,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": MAX_POSITIONS,
        "mlp_bias": False,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": RMS_NORM_EPS,
        "rope_scaling": None,
        "rope_theta": ROPE_THETA,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": VOCAB_SIZE,
    }
    write_json(out("config.json"), config)
    write_json(
        out("generation_config.json"),
        {
            "bos_token_id": ids[BOS_TOKEN],
            "eos_token_id": ids[EOS_TOKEN],
            "pad_token_id": ids[PAD_TOKEN],
        },
    )

    added = {str(ids[t]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True} for t in SPECIAL_TOKENS}
    write_json(
        out("tokenizer_config.json"),
        {
            "added_tokens_decoder": added,
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
            "add_bos_token": False,
            "add_eos_token": False,
            "bos_token": None,
            "chat_template": CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": EOS_TOKEN,
            "errors": "replace",
            "model_max_length": MAX_POSITIONS,
            "pad_token": PAD_TOKEN,
            "split_special_tokens": False,
            "tokenizer_class": "PreTrainedTokenizerFast",
            "unk_token": None,
        },
    )
    write_json(
        out("special_tokens_map.json"),
        {
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
            "eos_token": EOS_TOKEN,
            "pad_token": PAD_TOKEN,
        },
    )
    with open(out("chat_template.jinja"), "w", encoding="utf-8", newline="\n") as f:
        f.write(CHAT_TEMPLATE + "\n")

    # Weights last, from a PRNG stream of their own so that tokenizer changes do not move them.
    write_safetensors(out("model.safetensors"), make_weights(random.Random(args.seed + 1), silent_token_ids(tok)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
