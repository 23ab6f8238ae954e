"""What the providers file resolves to: providers (with the data policies they promise), the
deployments that serve a model id, and the model ids clients ask for (providers/config.py reads
the file into these)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sluicegate.providers.catalog import ModelPrice

STRATEGIES = ("priority", "weighted", "least_busy", "lowest_latency")
# What a provider can promise about the data it is sent, and the certifications it may hold.
DATA_POLICIES = ("zdr", "no_training", "no_prompt_logging")
CERTIFICATIONS = ("soc2", "iso27001", "gdpr", "hipaa")


@dataclass(frozen=True, slots=True)
class DataPolicy:
    """What a provider promises about the data it is sent, as the operator declared it."""

    zdr: bool = False  # zero data retention: nothing kept after the answer
    no_training: bool = False
    no_prompt_logging: bool = False
    certifications: frozenset[str] = frozenset()  # of soc2, iso27001, gdpr, hipaa
    region: str | None = None  # e.g. us, eu

    def meets(self, requirement: str) -> bool:
        """Whether the policy keeps `requirement`: zdr, no_training, no_prompt_logging, or a
        certification."""
        if requirement == "zdr":
            return self.zdr
        if requirement == "no_training":
            return self.no_training
        if requirement == "no_prompt_logging":
            return self.no_prompt_logging
        return requirement in self.certifications


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One upstream endpoint and how to authenticate to it. Secrets stay out of repr."""

    name: str
    type: str
    base_url: str
    api_key: str | None = field(repr=False)
    api_version: str | None
    # Extra upstream headers often carry credentials too (api-key, x-goog-api-key).
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    max_connections: int
    timeout_seconds: float | None
    policy: DataPolicy = DataPolicy()


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """One deployment of a model clients may ask for: the provider it goes to, the upstream
    name, its mode, price and limits, and what routing weighs it by."""

    id: str  # the model id clients send
    provider: ProviderConfig
    upstream_model: str
    mode: str
    price: ModelPrice
    context_window: int
    max_output_tokens: int
    catalog_id: str | None
    # Unique within the model; names the deployment in usage, headers, metrics and health.
    deployment: str = ""
    region: str | None = None  # the deployment's own, else its provider's
    priority: int = 0  # lower is tried first by the `priority` strategy
    weight: int = 1  # share of traffic under the `weighted` strategy
    rpm: int | None = None  # capacity hints: requests and tokens per minute
    tpm: int | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A model id clients may ask for: its deployments in file order, how to choose among them,
    and the models to fall back to when none of them answers."""

    id: str
    mode: str
    deployments: tuple[ModelRoute, ...]
    strategy: str = "priority"
    fallbacks: tuple[str, ...] = ()
    # Tried instead when a deployment says the prompt is longer than its context window.
    context_window_fallbacks: tuple[str, ...] = ()

    @property
    def primary(self) -> ModelRoute:
        """The first deployment in the file (what `provider:` alone declares)."""
        return self.deployments[0]
