"""SERENITE maintenance contracts: API models, eligibility for Backup+, Redis store, file import.

Secrets (the registration forms ask for admin/SSH passwords, Wi-Fi keys ...) are never stored
nor returned: any field whose name looks like a secret is dropped, at any nesting level, when a
client or an equipment is validated - before anything reaches Redis or a response.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    computed_field,
    field_validator,
    model_validator,
)

from infra.text import as_str
from quotas import keys


# --- reason codes (API.md: 422 not_eligible, field "reason") -------------------------------------
class Ineligibility(StrEnum):
    """Why a contract does not entitle a server to Backup+: the API's ``reason`` code and its text."""

    text: str

    def __new__(cls, code: str, text: str) -> Self:
        member = str.__new__(cls, code)
        member._value_ = code
        member.text = text
        return member

    CONTRACT_NOT_STARTED = ("contract_not_started", "The maintenance contract has not started yet")
    CONTRACT_EXPIRED = ("contract_expired", "The maintenance contract has expired")
    CONTRACT_SUSPENDED = ("contract_suspended", "The maintenance contract is suspended")
    CONTRACT_TERMINATED = ("contract_terminated", "The maintenance contract has been terminated")
    EQUIPMENT_NOT_ON_CONTRACT = ("equipment_not_on_contract", "This serial number is not on the contract")
    EQUIPMENT_NOT_VIDEOCONFERENCE = ("equipment_not_videoconference", "This equipment is not a videoconference system")
    WARRANTY_EXPIRED = ("warranty_expired", "The equipment's manufacturer warranty has expired")


REASON_CODES: Final[tuple[str, ...]] = tuple(r.value for r in Ineligibility)

EquipmentKind = Literal["video_bridge", "video_endpoint", "networker", "projector", "clickshare", "other"]
# Clause 3-5 / footnote of clause 2: Backup+ is for videoconference systems only.
VIDEOCONFERENCE_KINDS: Final[frozenset[str]] = frozenset({"video_bridge", "video_endpoint"})
ContractStatus = Literal["active", "suspended", "terminated"]

# --- limits ---------------------------------------------------------------------------------------
MAX_NUMBER_LEN: Final = 64
MAX_EQUIPMENT: Final = 500
MAX_EXTRA_STR_LEN: Final = 2000
MAX_EXTRA_DEPTH: Final = 6
MAX_EXTRA_ITEMS: Final = 200

# Contract numbers end up in URL paths and Redis key names: ASCII letters, digits and - _ . /, starting
# with a letter or digit; in particular no ':' (the separator of Redis key names, so no number can
# name another key), no whitespace, no braces (Redis hash tags).
_NUMBER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
# Clause 7: maintenance may be suspended 15 days after a formal notice; renewal is offered two months
# before the end of the term.
SUSPENSION_NOTICE_DAYS: Final = 15
RENEWAL_NOTICE_MONTHS: Final = 2


Text200 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text100 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Serial = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


# --- secrets --------------------------------------------------------------------------------------
_SECRET_SUBSTRINGS = (
    "password", "passwd", "passphrase", "secret", "credential", "apikey", "token", "motdepasse",
    "privatekey", "accesskey", "pincode",
)  # fmt: skip
_SECRET_TOKENS = frozenset({"pin", "pwd", "pass", "mdp", "psk", "otp"})
_KEY_TOKENS = frozenset({"key", "cle", "cles", "keys"})
_KEY_QUALIFIERS = frozenset({"api", "wifi", "ssid", "wpa", "ssh", "private", "access", "licence", "license"})


def is_secret_name(name: str) -> bool:
    """True when a field name looks like it holds a secret (case, separators and accents ignored).

    ``adminPassword``, ``admin_password``, ``Mot de passe SSH``, ``api-key``, ``PIN``,
    ``cle_wifi`` and ``join_token`` all count; ``pinned`` or ``shipping`` do not.
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", ascii_name).lower()
    tokens = [t for t in re.split(r"[^a-z0-9]+", spaced) if t]
    joined = "".join(tokens)
    if any(s in joined for s in _SECRET_SUBSTRINGS):
        return True
    tokset = set(tokens)
    if tokset & _SECRET_TOKENS:
        return True
    return bool(tokset & _KEY_TOKENS and tokset & _KEY_QUALIFIERS)


def strip_secrets(value: Any) -> Any:
    """A copy of ``value`` without any secret-named key, at any depth (no other check)."""
    if isinstance(value, dict):
        return {
            k: strip_secrets(v) for k, v in value.items() if not (isinstance(k, str) and is_secret_name(k))
        }
    if isinstance(value, list):
        return [strip_secrets(v) for v in value]
    return value


def _clean_extra(value: Any, where: str, depth: int = 0) -> Any:
    """Drop secret-named keys at any depth and keep extra values plain, bounded JSON."""
    if depth > MAX_EXTRA_DEPTH:
        raise ValueError(f"{where}: nested too deeply (max {MAX_EXTRA_DEPTH} levels)")
    if isinstance(value, dict):
        if len(value) > MAX_EXTRA_ITEMS:
            raise ValueError(f"{where}: too many fields (max {MAX_EXTRA_ITEMS})")
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: field names must be strings")  # noqa: TRY004 (pydantic wants ValueError)
            if len(k) > 100:
                raise ValueError(f"{where}: field name too long (max 100 characters)")
            if is_secret_name(k):
                continue
            out[k] = _clean_extra(v, f"{where}.{k}", depth + 1)
        return out
    if isinstance(value, list | tuple):
        if len(value) > MAX_EXTRA_ITEMS:
            raise ValueError(f"{where}: too many items (max {MAX_EXTRA_ITEMS})")
        return [_clean_extra(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, str):
        if len(value) > MAX_EXTRA_STR_LEN:
            raise ValueError(f"{where}: text too long (max {MAX_EXTRA_STR_LEN} characters)")
        return value
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, date | datetime):  # YAML gives dates for unquoted YYYY-MM-DD
        return value.isoformat()
    raise ValueError(f"{where}: unsupported value of type {type(value).__name__}")


def _strip_secrets(data: Any, declared: set[str], where: str) -> Any:
    if not isinstance(data, dict):
        return data
    out: dict[str, Any] = {}
    for k, v in data.items():
        if not isinstance(k, str):
            raise ValueError(f"{where}: field names must be strings")  # noqa: TRY004 (pydantic wants ValueError)
        if k in declared:
            out[k] = v
        elif not is_secret_name(k):
            out[k] = _clean_extra(v, f"{where}.{k}", 1)
    return out


# --- models ---------------------------------------------------------------------------------------
class Equipment(BaseModel):
    """One covered equipment. Extra fields (public IP, firmware ...) are kept, secrets dropped."""

    model_config = ConfigDict(extra="allow")

    serial: Serial
    brand: Text100
    model: Text100
    product_code: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None
    kind: EquipmentKind
    warranty_until: date

    @model_validator(mode="before")
    @classmethod
    def _drop_secrets(cls, data: Any) -> Any:
        return _strip_secrets(data, set(cls.model_fields), "equipment")

    @property
    def is_videoconference(self) -> bool:
        return self.kind in VIDEOCONFERENCE_KINDS


class Client(BaseModel):
    """The client company. Extra fields (contact, address, phone ...) are kept, secrets dropped."""

    model_config = ConfigDict(extra="allow")

    company: Text200

    @model_validator(mode="before")
    @classmethod
    def _drop_secrets(cls, data: Any) -> Any:
        return _strip_secrets(data, set(cls.model_fields), "client")


def _add_months(d: date, months: int) -> date:
    """Same day ``months`` later (or earlier), clamped to the end of a shorter month."""
    total = d.year * 12 + d.month - 1 + months
    year, month = divmod(total, 12)
    month += 1
    for day in (d.day, 30, 29, 28):
        try:
            return date(year, month, day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def _add_years(d: date, years: int) -> date:
    """Same day ``years`` later; 29 February falls on 1 March in a common year (the term is never
    shortened: a one-year contract from 2024-02-29 covers up to and including 2025-02-28)."""
    try:
        return d.replace(year=d.year + years)
    except ValueError:
        return date(d.year + years, 3, 1)


class Contract(BaseModel):
    # Unknown top-level fields are ignored (never stored): only client/equipment carry extras.
    model_config = ConfigDict(extra="ignore")

    number: Annotated[str, Field(min_length=1, max_length=MAX_NUMBER_LEN)]
    client: Client
    start_date: date
    term_years: Literal[1, 3, 5]
    status: ContractStatus
    equipment: Annotated[list[Equipment], Field(max_length=MAX_EQUIPMENT)] = Field(default_factory=list)
    # Clause 7: the date of the formal notice (registered letter), and the suspension it leads to
    # (from that date on, the contract no longer entitles anything to Backup+).
    formal_notice_on: date | None = None
    suspended_from: date | None = None
    suspension_reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_secrets(cls, data: Any) -> Any:
        # First thing, so that not even a validation error's "input" carries a secret.
        return strip_secrets(data)

    @field_validator("number")
    @classmethod
    def _number_shape(cls, v: str) -> str:
        if not _NUMBER_RE.fullmatch(v):
            raise ValueError(
                "contract number: letters, digits and - _ . / only, starting with a letter or digit "
                "(no ':', no whitespace)"
            )
        return v

    @model_validator(mode="after")
    def _suspension_after_notice(self) -> Contract:
        if self.formal_notice_on is not None:
            earliest = self.formal_notice_on + timedelta(days=SUSPENSION_NOTICE_DAYS)
            if self.suspended_from is None:
                self.suspended_from = earliest
            elif self.suspended_from < earliest:
                raise ValueError(
                    f"suspended_from must be at least {SUSPENSION_NOTICE_DAYS} days after formal_notice_on "
                    f"(clause 7): {earliest.isoformat()} or later"
                )
        return self

    @model_validator(mode="after")
    def _unique_serials(self) -> Contract:
        seen: dict[str, int] = {}
        for i, eq in enumerate(self.equipment):
            k = eq.serial.casefold()
            if k in seen:
                raise ValueError(
                    f"equipment[{i}].serial {eq.serial!r} duplicates equipment[{seen[k]}] "
                    "(serials must be unique within a contract)"
                )
            seen[k] = i
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def end_date(self) -> date:
        """First day no longer covered: start_date + term_years years."""
        return _add_years(self.start_date, self.term_years)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def renewal_notice_from(self) -> date:
        """When the renewal is to be offered (clause 7): two months before the end of the term."""
        return _add_months(self.end_date, -RENEWAL_NOTICE_MONTHS)

    def renewal_due(self, on: date) -> bool:
        return self.status != "terminated" and self.renewal_notice_from <= on < self.end_date

    def suspended_on(self, on: date) -> bool:
        return self.status == "suspended" or (self.suspended_from is not None and on >= self.suspended_from)

    def find_equipment(self, serial: str) -> Equipment | None:
        """The equipment with this serial (surrounding whitespace and case ignored)."""
        k = serial.strip().casefold()
        for eq in self.equipment:
            if eq.serial.casefold() == k:
                return eq
        return None


def is_valid_number(number: str) -> bool:
    return 0 < len(number) <= MAX_NUMBER_LEN and bool(_NUMBER_RE.fullmatch(number))


# --- eligibility ----------------------------------------------------------------------------------
def check_eligibility(contract: Contract, serial: str, on: date) -> Ineligibility | None:
    """Why ``serial`` may not get Backup+ under ``contract`` on day ``on``; None when it may.

    Checked in this order: terminated, suspended, not started, expired, equipment not on the
    contract, not a videoconference system, manufacturer warranty over.
    """
    if isinstance(on, datetime):
        on = on.date()
    if contract.status == "terminated":
        return Ineligibility.CONTRACT_TERMINATED
    if contract.suspended_on(on):
        return Ineligibility.CONTRACT_SUSPENDED
    if on < contract.start_date:
        return Ineligibility.CONTRACT_NOT_STARTED
    if on >= contract.end_date:
        return Ineligibility.CONTRACT_EXPIRED
    eq = contract.find_equipment(serial)
    if eq is None:
        return Ineligibility.EQUIPMENT_NOT_ON_CONTRACT
    if not eq.is_videoconference:
        return Ineligibility.EQUIPMENT_NOT_VIDEOCONFERENCE
    if eq.warranty_until < on:
        return Ineligibility.WARRANTY_EXPIRED
    return None


# --- store ----------------------------------------------------------------------------------------
class ContractStore:
    """Contracts in Redis: ``keys.contract(number)`` holds the JSON, ``keys.CONTRACTS`` the numbers.

    Every command touches one key (Cluster-safe). Works with or without ``decode_responses``.
    """

    def __init__(self, redis: Any) -> None:
        self._r = redis

    async def put(self, contract: Contract) -> bool:
        """Create or replace; True when the contract did not exist before."""
        doc = contract.model_dump_json()
        previous = await self._r.set(keys.contract(contract.number), doc, get=True)
        await self._r.sadd(keys.CONTRACTS, contract.number)
        return previous is None

    async def get(self, number: str) -> Contract | None:
        if not is_valid_number(number):
            return None
        raw = await self._r.get(keys.contract(number))
        return None if raw is None else Contract.model_validate_json(raw)

    async def list(self) -> list[Contract]:
        numbers = sorted(as_str(n) for n in await self._r.smembers(keys.CONTRACTS))
        if not numbers:
            return []
        pipe = self._r.pipeline(transaction=False)
        for n in numbers:
            pipe.get(keys.contract(n))
        raws = await pipe.execute()
        return [Contract.model_validate_json(raw) for raw in raws if raw is not None]


# --- file import ----------------------------------------------------------------------------------
class ContractFileError(ValueError):
    """A contracts file that cannot be loaded; ``errors`` lists every problem found."""

    def __init__(self, path: str, errors: list[str]) -> None:
        self.path = path
        self.errors = errors
        if len(errors) == 1:
            super().__init__(f"{path}: {errors[0]}")
        else:
            super().__init__(f"{path}: {len(errors)} problems:\n" + "\n".join(f"  - {e}" for e in errors))


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(contract)"


def _parse(path: Path, text: str) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ContractFileError(
                str(path), [f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"]
            ) from e
    try:
        return yaml.safe_load(text)  # YAML 1.1 is (almost) a superset of JSON
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ContractFileError(str(path), [f"invalid YAML{where}: {problem}"]) from e


def load_contracts_file(path: str | Path) -> list[Contract]:
    """Contracts from a JSON or YAML file: a list of contracts, ``{"contracts": [...]}`` or one
    contract. Raises ContractFileError naming each bad item and field."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ContractFileError(str(p), [f"cannot read: {e}"]) from e
    data = _parse(p, text)
    if isinstance(data, dict) and "contracts" in data:
        data = data["contracts"]
    elif isinstance(data, dict) and "number" in data:
        data = [data]
    if not isinstance(data, list):
        raise ContractFileError(
            str(p), ['expected a list of contracts or {"contracts": [...]}, got ' + type(data).__name__]
        )
    contracts: list[Contract] = []
    errors: list[str] = []
    first_seen: dict[str, int] = {}
    for i, item in enumerate(data):
        label = f"contracts[{i}]"
        if isinstance(item, dict) and isinstance(item.get("number"), str):
            label += f" ({item['number']})"
        if not isinstance(item, dict):
            errors.append(f"{label}: expected a mapping, got {type(item).__name__}")
            continue
        try:
            c = Contract.model_validate(item)
        except ValidationError as e:
            for err in e.errors(include_input=False, include_url=False):
                msg = err["msg"].removeprefix("Value error, ")
                errors.append(f"{label}: {_loc(tuple(err['loc']))}: {msg}")
            continue
        if c.number in first_seen:
            errors.append(f"{label}: number {c.number!r} already used by contracts[{first_seen[c.number]}]")
            continue
        first_seen[c.number] = i
        contracts.append(c)
    if errors:
        raise ContractFileError(str(p), errors)
    return contracts


# --- demo -----------------------------------------------------------------------------------------
def demo_contract(today: date) -> Contract:
    """A realistic, eligible demo contract (``serve --demo``): active, started last year, 3 years."""
    start = date(today.year - 1, today.month, 1)
    return Contract(
        number=f"SER-{today.year}-0042",
        client=Client.model_validate(
            {
                "company": "Cabinet Roux & Associés",
                "contact": "Claire Roux",
                "phone": "+33 4 91 55 20 10",
                "email": "it@cabinet-roux.example",
                "address": "12 cours Mirabeau",
                "postal_code": "13100",
                "city": "Aix-en-Provence",
            }
        ),
        start_date=start,
        term_years=3,
        status="active",
        equipment=[
            Equipment(
                serial="82A1-4F3C-D907",
                brand="Poly",
                model="RealPresence Collaboration Server 1800",
                product_code="7200-87120-001",
                kind="video_bridge",
                warranty_until=_add_years(today, 2),
            ),
            Equipment(
                serial="FOC2411N0QX",
                brand="Cisco",
                model="Webex Room Kit",
                product_code="CS-KIT-K9",
                kind="video_endpoint",
                warranty_until=_add_years(today, 1),
            ),
            Equipment(
                serial="X7MK5600123",
                brand="Epson",
                model="EB-L200F",
                product_code="V11H990040",
                kind="projector",
                warranty_until=_add_years(start, 3),
            ),
        ],
    )
