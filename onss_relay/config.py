"""Configuration: one TOML file plus ``ONSS_RELAY__SECTION__KEY`` overrides, validated once into frozen dataclasses.

Every error names the file and the key at fault. Secrets are never values here, only paths to files
holding them; ``read_secret`` reads such a file when a stage needs it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from onss_relay.config_rules import (
    hook_problems,
    journal_url_problem,
    renamed_keys,
    technical_user_problem,
    transport_defaults,
)
from onss_relay.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/onss-relay/config.toml")
ENV_PREFIX = "ONSS_RELAY__"
REQUIRED = object()  # marker default for keys that must be given


class Duration(float):
    """Seconds, written in the config as "2s", "5m", "1h", "250ms" or a plain number of seconds."""


class AutoBool(str):
    """ "auto", or true/false (written as a TOML boolean or a string)."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> Duration:
    """Given "2s"/"5m"/"1h"/"250ms"/a number, return seconds; raise ValueError on anything else."""
    if isinstance(value, bool):
        raise ValueError('expected a duration like "2s" or "5m"')
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return Duration(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f'{value!r} is not a duration like "2s", "5m" or "1h"')
    return Duration(float(m.group(1)) * _UNITS[m.group(2)])


def _field(default: Any = REQUIRED, doc: str = "") -> Any:
    if default is REQUIRED:
        return dataclasses.field(metadata={"doc": doc, "required": True})
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"doc": doc})
    return dataclasses.field(default=default, metadata={"doc": doc})


@dataclasses.dataclass(frozen=True)
class SenderConfig:
    number: str = _field(doc="six-digit sender number (numéro d'expéditeur)")


@dataclasses.dataclass(frozen=True)
class PathsConfig:
    root: Path = _field(doc="spool root: outbox/ sent/ failed/ inbox/ results/ work/ journal.db")
    outbox: Path | None = _field(None, "where declarations are dropped; default <root>/outbox")
    inbox: Path | None = _field(None, "where responses are mirrored; default <root>/inbox")
    results: Path | None = _field(None, "where <GO name>.json results are written; default <root>/results")

    @property
    def outbox_dir(self) -> Path:
        return self.outbox or self.root / "outbox"

    @property
    def inbox_dir(self) -> Path:
        return self.inbox or self.root / "inbox"

    @property
    def sent_dir(self) -> Path:
        return self.root / "sent"

    @property
    def failed_dir(self) -> Path:
        return self.root / "failed"

    @property
    def results_dir(self) -> Path:
        return self.results or self.root / "results"

    @property
    def work_dir(self) -> Path:
        return self.root / "work"

    @property
    def journal_path(self) -> Path:
        return self.root / "journal.db"


@dataclasses.dataclass(frozen=True)
class SigningConfig:
    key: Path = _field(doc="PKCS#12 (.p12/.pfx) or PEM private key")
    certificate: Path | None = _field(None, "PEM certificate, when key is a PEM private key")
    password_file: Path | None = _field(None, "file holding the PKCS#12 or PEM key password")
    digest: str = _field("sha256", "sha256, sha384 or sha512")
    layout: str = _field("single-line", "base64 layout of FS files: single-line, 76-cr or 64-crlf")
    sign_in_s: bool = _field(
        True, "write an FS for environment S too, as the documents ask; false only for a transfer point refusing it"
    )
    expiry_warning_days: int = _field(30, "warn this many days before the certificate expires")


@dataclasses.dataclass(frozen=True)
class RemoteConfig:
    transport: str = _field("sftp", "sftp, ftp, ftps (while the ONSS still supports FTP) or local")
    host: str = _field("sftp.socialsecurity.be", "transfer point host (SFTP's; ftp and ftps need their own)")
    port: int = _field(8022, "transfer point port (ftp and ftps: 21 by default; 8022, SFTP's, is refused for them)")
    username: str = _field("", "technical user: 8 to 20 characters, a-z and 0-9 only (the portal's rule)")
    check_username: bool = _field(
        True, "refuse a username outside the technical user rule; false only when the portal shows another name"
    )
    private_key: Path | None = _field(None, "SSH private key file (sftp)")
    passphrase_file: Path | None = _field(None, "file holding the SSH key passphrase")
    known_hosts: Path | None = _field(None, "OpenSSH known_hosts; unknown or changed host key = refuse")
    legacy_ssh_rsa: bool = _field(True, "sign SSH auth with ssh-rsa (SHA-1) as the transfer point expects")
    base_dir: str = _field(".", "remote folder holding IN, INTEST, INTEST-S, OUT, OUTTEST, OUTTEST-S")
    password_file: Path | None = _field(None, "file holding the FTP/FTPS password")
    ca_file: Path | None = _field(None, "CA bundle to verify the FTPS server certificate")
    connections: int = _field(4, "parallel uploads: SFTP sessions on one SSH connection; FTP and local: connections")
    timeout: Duration = _field(Duration(30), "connect and read timeout")
    keepalive: Duration = _field(
        Duration(30), "SSH keepalive interval; the daemon also asks an idle connection this often if it is alive"
    )
    keep_open: Duration = _field(
        Duration(3600), "the daemon keeps its connection open this long with nothing to send (0: close at once)"
    )
    quiet_period: Duration = _field(
        Duration(120),
        "after giving up a connection with requests in flight, wait this long before touching those sets again",
    )
    permanent_retry: Duration = _field(
        Duration(300), "after a permanent error (login, host key, permission) try again this much later"
    )


@dataclasses.dataclass(frozen=True)
class WatchConfig:
    settle: Duration = _field(Duration(2), "a file must keep its size and mtime this long")
    settle_unknown: Duration = _field(
        Duration(30),
        "a file already there when the watch began (or when events were lost) must stay unchanged this long, "
        "unless its writer is seen closing it",
    )
    rescan: Duration = _field(Duration(60), "full outbox scan interval")
    polling: AutoBool = _field(AutoBool("auto"), "auto, true or false: polling observer for network shares")
    incomplete_after: Duration = _field(
        Duration(3600),
        "quarantine a set still missing parts, or XML still not well-formed, this long after the relay first saw it",
    )
    keep_released: Duration = _field(
        Duration(3600),
        "hold a sent declaration's outbox original this long in held/ before deleting it (if still unchanged)",
    )
    environments: list[str] = _field(["R", "T", "S"], "environments this relay may send to")
    duplicate_content_days: int = _field(
        3, "quarantine a set whose content equals a set claimed this many days back (naming it); 0 = off"
    )
    extra_application_codes: list[str] = _field(
        [], 'codes senders send beyond the shipped table (a new declaration type), like ["ABCD"]'
    )


@dataclasses.dataclass(frozen=True)
class PollConfig:
    interval: Duration = _field(Duration(300), "how often OUT* folders are listed")
    environments: list[str] = _field(["R", "T", "S"], "whose OUT folders are polled")
    delete_remote: bool = _field(True, "delete remote responses once durably copied")
    max_size: int = _field(1 << 30, "largest response accepted, in bytes")
    acrf_overdue: Duration = _field(Duration(7200), "flag a sent set still without its ACRF after this")
    notification_overdue: Duration = _field(
        Duration(172800), "flag an acknowledged set still without its notification after this"
    )


@dataclasses.dataclass(frozen=True)
class RetentionConfig:
    results_days: int = _field(
        90, "results/<GO name>.json of a set with its final answer removed this many days after it; 0 = keep"
    )
    inbox_days: int = _field(
        0,
        "a set's answers in inbox/ removed this many days after its final answer, an answer linked to no set this"
        " many days after the relay took it; 0 = keep",
    )
    sent_days: int = _field(0, "a set's files in sent/ removed this many days after its final answer; 0 = keep")
    interval: Duration = _field(Duration(3600), "how often the daemon prunes")


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
    listen: str = _field("", "host:port for Prometheus /metrics, /healthz and the status page; empty = off")
    password_file: Path | None = _field(
        None, "file holding the status page's HTTP basic password (user: metrics.user); required off loopback"
    )
    user: str = _field("onss-relay", "the HTTP basic user name that goes with metrics.password_file")
    token_file: Path | None = _field(
        None, "file holding a bearer token for the status page (Authorization: Bearer); or password_file"
    )


@dataclasses.dataclass(frozen=True)
class HooksConfig:
    on_result: str = _field(
        "", "command run with the path of results/<GO name>.json when a set's final answer comes or it is overdue"
    )
    timeout: Duration = _field(Duration(30), "how long on_result may run before it is stopped")


@dataclasses.dataclass(frozen=True)
class JournalConfig:
    url: str = _field(
        "",
        "empty = SQLite in the spool (one machine); postgresql://user@host:port/db = PostgreSQL (two machines,"
        " one active relay); TLS as libpq has it, in the query: ?sslmode=verify-full&sslrootcert=/etc/…/ca.pem",
    )
    password_file: Path | None = _field(None, "file holding the PostgreSQL password (never in the url)")
    lease: Duration = _field(
        Duration(10), "PostgreSQL: how long the active relay's leadership lasts unrenewed; a standby takes over after"
    )


@dataclasses.dataclass(frozen=True)
class Config:
    sender: SenderConfig
    paths: PathsConfig
    signing: SigningConfig
    remote: RemoteConfig = dataclasses.field(default_factory=RemoteConfig)
    watch: WatchConfig = dataclasses.field(default_factory=WatchConfig)
    poll: PollConfig = dataclasses.field(default_factory=PollConfig)
    retention: RetentionConfig = dataclasses.field(default_factory=RetentionConfig)
    metrics: MetricsConfig = dataclasses.field(default_factory=MetricsConfig)
    hooks: HooksConfig = dataclasses.field(default_factory=HooksConfig)
    journal: JournalConfig = dataclasses.field(default_factory=JournalConfig)
    source: Path | None = None  # the file this was loaded from


SECTIONS: dict[str, type] = {
    f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config) if f.name != "source"
}


def default_config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Given the --config value (or None), return the path to read: --config, $ONSS_RELAY_CONFIG, /etc."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("ONSS_RELAY_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Given a TOML path and an environment, return the validated Config or raise ConfigError."""
    environ = os.environ if environ is None else environ
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found (use --config or $ONSS_RELAY_CONFIG)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read configuration file: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return config_from_dict(apply_env_overrides(raw, environ, path), path, env_sources(environ))


def env_sources(environ: Mapping[str, str]) -> dict[tuple[str, str], str]:
    """Given an environment, return which (section, key) each ONSS_RELAY__SECTION__KEY variable sets, so that
    an error about such a key names the variable rather than a file that never mentions it."""
    found: dict[tuple[str, str], str] = {}
    for var in environ:
        parts = var[len(ENV_PREFIX) :].lower().split("__") if var.startswith(ENV_PREFIX) else []
        if len(parts) == 2:
            found[(parts[0], parts[1])] = var
    return found


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str], path: Path) -> dict[str, Any]:
    """Given parsed TOML, return a copy where each ONSS_RELAY__SECTION__KEY variable replaces its key."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for var, text in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        parts = var[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"environment variable {var}: expected {ENV_PREFIX}SECTION__KEY")
        section, key = parts
        merged.setdefault(section, {})
        if not isinstance(merged[section], dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        merged[section][key] = _env_value(text, _hint(section, key))
    return merged


def _hint(section: str, key: str) -> Any:
    cls = SECTIONS.get(section)
    return typing.get_type_hints(cls).get(key) if cls is not None else None


def _env_value(text: str, hint: Any = None) -> Any:
    """An override is read as a TOML value when it is one (true, 4, ["R"]), else as a plain string; a key that
    holds a string or a path always takes the text as it is (SENDER__NUMBER=123456 is the string "123456")."""
    if hint in (str, Path, str | None, Path | None) and not text.startswith('"'):
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def config_from_dict(raw: dict[str, Any], path: Path, from_env: Mapping[tuple[str, str], str] | None = None) -> Config:
    """Given a dict shaped like the TOML file (and which keys environment variables set), return the validated
    Config or raise ConfigError."""
    for section in raw:
        if section not in SECTIONS:
            raise ConfigError(f"{path}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
    built: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        if section == "remote":
            table = transport_defaults(table, path)
        table = renamed_keys(section, table, path, from_env or {})
        built[section] = _build_section(cls, section, table, path)
    cfg = Config(**built, source=path)
    _check_semantics(cfg, path, from_env or {})
    return cfg


def _build_section(cls: type, section: str, table: dict[str, Any], path: Path) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in table:
        if key not in fields:
            raise ConfigError(f"{path}: unknown key {section}.{key} (known: {', '.join(fields)})")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in table:
            if f.metadata.get("required"):
                raise ConfigError(f"{path}: missing required key {section}.{name} ({f.metadata['doc']})")
            continue
        values[name] = _convert(table[name], hints[name], f"{section}.{name}", path)
    return cls(**values)


def _convert(value: Any, hint: Any, key: str, path: Path) -> Any:
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    if optional:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if value == "":
            return None
    try:
        converted = _convert_to(value, hint)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: {key} = {value!r}: {e}") from None
    if isinstance(converted, Path) and not converted.is_absolute():
        return path.parent.absolute() / converted  # relative paths are relative to the config file
    return converted


def _to_autobool(value: Any) -> AutoBool:
    text = str(value).lower()
    if text not in ("auto", "true", "false"):
        raise ValueError("expected auto, true or false")
    return AutoBool(text)


def _checked(
    kind: Callable[[Any], bool], why: str, convert: Callable[[Any], Any] = lambda v: v
) -> Callable[[Any], Any]:
    """A converter that raises TypeError(why) unless ``kind(value)``, then returns ``convert(value)``."""

    def run(value: Any) -> Any:
        if not kind(value):
            raise TypeError(why)
        return convert(value)

    return run


CONVERTERS: dict[Any, Callable[[Any], Any]] = {
    Duration: parse_duration,
    AutoBool: _to_autobool,
    bool: _checked(lambda v: isinstance(v, bool), "expected true or false"),
    int: _checked(lambda v: isinstance(v, int) and not isinstance(v, bool), "expected a whole number"),
    str: _checked(lambda v: isinstance(v, str), "expected a string in quotes"),
    Path: _checked(
        lambda v: isinstance(v, str) and bool(v), "expected a file path in quotes", lambda v: Path(v).expanduser()
    ),
    list: _checked(
        lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        'expected a list of strings, like ["R", "T"]',
        list,
    ),
}


def _convert_to(value: Any, hint: Any) -> Any:
    convert = CONVERTERS.get(typing.get_origin(hint) or hint)
    if convert is None:
        raise TypeError(f"unsupported type {hint}")  # a bug in the dataclass tree, not user input
    return convert(value)


def _one_of(value: str, choices: tuple[str, ...]) -> str | None:
    """Why value is not one of choices (None when it is)."""
    if value in choices:
        return None
    return f"{value!r} is not {', '.join(choices[:-1])} or {choices[-1]}"


def _listener_problems(cfg: Config) -> Iterator[tuple[str, str | None]]:
    """Yield (key, why) for the listener and the hook: the status page shows personal data, so off loopback
    it needs a secret; the hook must be a program it can run (config_rules.hook_problems)."""
    listen = cfg.metrics.listen
    if listen and not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[^:\s]*):[0-9]{1,5}", listen):
        yield "metrics.listen", f'{listen!r} is not host:port, like "127.0.0.1:9464"'
    elif listen and not cfg.metrics.password_file and not cfg.metrics.token_file and not loopback(listen):
        yield (
            "metrics.listen",
            f"{listen!r} is not a loopback address and the status page shows personal data:"
            " set metrics.password_file or metrics.token_file (or listen on 127.0.0.1)",
        )
    yield from hook_problems(cfg.hooks.on_result, cfg.hooks.timeout, cfg.paths.results_dir)


def _semantic_problems(cfg: Config) -> Iterator[tuple[str, str | None]]:
    """Yield (key, why it is wrong or None) for every check that a value's type cannot express."""
    yield (
        "sender.number",
        None if re.fullmatch(r"[0-9]{6}", cfg.sender.number) else f"{cfg.sender.number!r} is not 6 digits",
    )
    yield "signing.digest", _one_of(cfg.signing.digest, ("sha256", "sha384", "sha512"))
    yield "signing.layout", _one_of(cfg.signing.layout, ("single-line", "76-cr", "64-crlf"))
    yield "remote.transport", _one_of(cfg.remote.transport, ("sftp", "ftp", "ftps", "local"))
    if cfg.remote.check_username:
        yield "remote.username", technical_user_problem(cfg.remote.username, cfg.remote.host)
    yield "remote.connections", None if 1 <= cfg.remote.connections <= 32 else "must be between 1 and 32"
    yield "remote.port", None if 0 < cfg.remote.port < 65536 else f"{cfg.remote.port} is not a TCP port"
    # 0 made every connect non-blocking: each failed at once "Operation now in progress", said remote unreachable
    yield (
        "remote.timeout",
        None if cfg.remote.timeout > 0 else "must be more than 0s (how long a request may go unanswered)",
    )
    yield "watch.polling", _one_of(cfg.watch.polling, ("auto", "true", "false"))
    for code in cfg.watch.extra_application_codes:
        if not re.fullmatch(r"[A-Z0-9]{4}", code):
            yield "watch.extra_application_codes", f"{code!r} is not 4 capitals or digits"
    for key, envs in (("watch.environments", cfg.watch.environments), ("poll.environments", cfg.poll.environments)):
        for e in envs:
            yield key, _one_of(e, ("R", "T", "S"))
    yield from _listener_problems(cfg)
    yield "journal.url", journal_url_problem(cfg.journal.url)
    yield "journal.lease", None if cfg.journal.lease >= 3 else "must be at least 3s (renewed every quarter of it)"
    for key in ("results_days", "inbox_days", "sent_days"):
        yield f"retention.{key}", None if getattr(cfg.retention, key) >= 0 else "must be 0 (keep) or a number of days"
    required = {
        "sftp": ("username", "private_key", "known_hosts"),
        "ftp": ("username", "password_file"),
        "ftps": ("username", "password_file"),
    }
    for key in required.get(cfg.remote.transport, ()):
        if not getattr(cfg.remote, key):
            yield f"remote.{key}", f'is required when remote.transport = "{cfg.remote.transport}"'


def loopback(listen: str) -> bool:
    """Given metrics.listen ("host:port", "[v6]:port", ":port"), return whether only this machine can reach it."""
    host = listen.rpartition(":")[0].strip("[]")
    if host in ("", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, treat it as reachable from elsewhere


def _check_semantics(cfg: Config, path: Path, from_env: Mapping[tuple[str, str], str]) -> None:
    """Raise ConfigError at the first problem, naming the environment variable that set the key (Docker) rather
    than a file that never mentions that value."""
    for key, why in _semantic_problems(cfg):
        if why is not None:
            section, _, name = key.partition(".")
            var = from_env.get((section, name))
            raise ConfigError(f"{f'environment variable {var}' if var else path}: {key}: {why}")


def read_secret(path: Path | None, key: str) -> bytes | None:
    """Given a secret file path (or None) and its config key, return the secret without its trailing newline."""
    if path is None:
        return None
    try:
        return path.read_bytes().rstrip(b"\r\n")
    except OSError as e:
        raise ConfigError(f"{key} = {str(path)!r}: cannot read secret file: {e.strerror}") from None


def documented_keys() -> dict[str, dict[str, str]]:
    """Return every section's keys with their one-line documentation (to check config/example.toml)."""
    return {
        section: {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}
        for section, cls in SECTIONS.items()
    }
