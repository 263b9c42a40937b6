#!/usr/bin/python3
"""Regenerates bep52_sha256.json: BitTorrent v2 `pieces root`s made by libtorrent.

An implementation independent of telemesh's: Debian's python3-libtorrent (libtorrent
2.0.x, which creates v2 torrents). Run with the system Python, which is where apt puts
the module:

    apt-get install -y python3-libtorrent
    /usr/bin/python3 proto/tests/vectors/make_vectors.py

For each file size, a v2-only single-file torrent is created with `lt.create_torrent`
at several piece lengths, bdecoded, and the file's `pieces root` read from the
`file tree`. BEP 52 makes the pieces root independent of the piece length (the tree is
over 16 KiB blocks); the script asserts that libtorrent agrees before writing anything.
File contents are deterministic: byte i = (i * 31 + 7) % 251.

Size 0: libtorrent refuses a torrent whose only file is empty ("invalid length of
torrent"), so the empty file is put in a two-file torrent beside a 1-byte file; its
`file tree` entry then has `length` 0 and no `pieces root` key. That is recorded as
`"pieces_root": null`.

The JSON also holds `piece layers` (the tree's level log2(piece_length / 16 KiB),
last piece padded with zero leaves) of the largest file at two piece lengths, which
checks interior nodes and right-edge padding, not only the root.

The output is written one entry per line so that the Rust test can read it without a
JSON library.
"""

import json
import os
import sys
import tempfile

import libtorrent as lt

SIZES = [0, 1, 16383, 16384, 16385, 65536, (1 << 20) + 7]
PIECE_LENGTHS = [16384, 65536, 4 << 20]
LAYER_SIZE = (1 << 20) + 7
LAYER_PIECE_LENGTHS = [65536, 262144]
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bep52_sha256.json")


def content(n):
    return bytes((i * 31 + 7) % 251 for i in range(n))


def make_torrent(root, piece_length):
    fs = lt.file_storage()
    lt.add_files(fs, root)
    ct = lt.create_torrent(fs, piece_length, lt.create_torrent.v2_only)
    lt.set_piece_hashes(ct, os.path.dirname(root))
    t = lt.bdecode(lt.bencode(ct.generate()))
    assert t[b"info"][b"meta version"] == 2, t[b"info"]
    assert b"pieces" not in t[b"info"], "v2-only torrent must have no v1 piece hashes"
    return t


def single_file(tmp, size, piece_length):
    """(pieces root or None, piece layer bytes or None) of one file of `size` bytes."""
    path = os.path.join(tmp, f"f{size}")
    with open(path, "wb") as f:
        f.write(content(size))
    t = make_torrent(path, piece_length)
    entry = t[b"info"][b"file tree"][os.path.basename(path).encode()][b""]
    assert entry[b"length"] == size
    root = entry.get(b"pieces root")
    return root, t[b"piece layers"].get(root) if root else None


def empty_file(tmp):
    """The `file tree` entry of an empty file (needs a non-empty neighbour)."""
    d = os.path.join(tmp, "with_empty")
    os.makedirs(d)
    with open(os.path.join(d, "empty"), "wb"):
        pass
    with open(os.path.join(d, "one"), "wb") as f:
        f.write(content(1))
    single_error = None
    alone = os.path.join(tmp, "alone")
    os.makedirs(alone)
    with open(os.path.join(alone, "empty"), "wb"):
        pass
    try:
        make_torrent(os.path.join(alone, "empty"), 16384)
    except RuntimeError as e:
        single_error = str(e)
    t = make_torrent(d, 16384)
    return t[b"info"][b"file tree"][b"empty"][b""], single_error


def main():
    files, layers = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            if size == 0:
                entry, err = empty_file(tmp)
                assert entry == {b"length": 0}, entry
                files.append({
                    "size": 0,
                    "pieces_root": None,
                    "note": "libtorrent: an empty file's file-tree entry is {length: 0} with no "
                            f"pieces root; a torrent of only an empty file fails: {err!r}",
                })
                continue
            roots = {pl: single_file(tmp, size, pl)[0] for pl in PIECE_LENGTHS}
            assert len(set(roots.values())) == 1, (size, roots)
            files.append({"size": size, "pieces_root": roots[PIECE_LENGTHS[0]].hex()})
        for pl in LAYER_PIECE_LENGTHS:
            _, layer = single_file(tmp, LAYER_SIZE, pl)
            hashes = [layer[i:i + 32].hex() for i in range(0, len(layer), 32)]
            layers.append({"size": LAYER_SIZE, "piece_length": pl, "hashes": hashes})

    lines = ["{"]
    lines.append(f'  "generator": {json.dumps("libtorrent " + lt.__version__ + " (Debian python3-libtorrent), create_torrent(v2_only), proto/tests/vectors/make_vectors.py")},')
    lines.append('  "hash": "sha256",')
    lines.append('  "leaf_size": 16384,')
    lines.append('  "content": "byte i = (i * 31 + 7) % 251",')
    lines.append(f'  "piece_lengths_checked": {json.dumps(PIECE_LENGTHS)},')
    lines.append('  "files": [')
    lines.append(",\n".join("    " + json.dumps(f) for f in files))
    lines.append("  ],")
    lines.append('  "piece_layers": [')
    lines.append(",\n".join("    " + json.dumps(l) for l in layers))
    lines.append("  ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    json.loads(text)  # well-formed
    with open(OUT, "w") as f:
        f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
