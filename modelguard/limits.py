"""Hard caps for parsers of hostile input. Reaching one is a finding (MG002)."""

from __future__ import annotations

from dataclasses import dataclass, fields

MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass(frozen=True)
class Limits:
    # pickle
    max_pickle_opcodes: int = 20_000_000
    max_memo_entries: int = 2_000_000
    max_stack_depth: int = 100_000  # nested MARK / containers on the stack
    max_pickle_streams: int = 1_000  # consecutive pickles in one file
    max_pickle_string: int = 256 * MiB  # one string/bytes argument inside a pickle
    # archives
    max_archive_members: int = 100_000
    max_archive_depth: int = 4  # archive inside archive inside ...
    max_member_bytes: int = 1 * GiB  # decompressed bytes read from one member
    max_total_decompressed: int = 4 * GiB  # decompressed bytes read per top-level file
    max_compression_ratio: int = 200  # with at least bomb_min_size declared
    bomb_min_size: int = 64 * MiB
    # headers of tensor formats
    max_header_bytes: int = 100 * MiB  # safetensors / npy / keras config
    max_tensors: int = 1_000_000
    # findings: past these, findings are counted (one summary per rule), not listed
    max_findings: int = 1_000  # listed per top-level file
    max_findings_per_rule: int = 20  # listed per rule and place (file or member)
    # work: what parsing may cost beyond one pass over the bytes on disk
    max_search_work: int = 4  # trial walks of trailing data: this many times its size
    # pickle opcodes walked in decompressed content, per compressed byte read, over
    # the whole file (with a floor): a small file of highly compressed opcodes
    # cannot cost more than a file of its size
    max_inflated_work: int = 50
    inflated_work_floor: int = 4_000_000

    @classmethod
    def from_mapping(cls, values: dict[str, object], *, source: str) -> Limits:
        """Build from a config table (kebab- or snake-case keys); errors name the key."""
        from modelguard.errors import ConfigError

        known = {f.name for f in fields(cls)}
        kwargs: dict[str, int] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"{source}: unknown limit {key!r}")
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{source}: limit {key!r} must be a positive integer")
            kwargs[name] = value
        return cls(**kwargs)
