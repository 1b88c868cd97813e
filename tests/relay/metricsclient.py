"""Reading a relay's metrics from outside its container, as the relay tests do.

The exporter listens on the relay's loopback only, so the tests ask it from inside
(testinfra) and parse the answer like Prometheus would.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

SCRAPE = (
    "import sys, urllib.request;"
    " sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=10)"
    ".read().decode())"
)


def metrics_port(host) -> int:
    """The exporter's port, from the services' settings on the relay."""
    settings = host.file("/etc/chatmail/relay.ini").content_string
    return int(
        next(
            line.split("=")[1] for line in settings.splitlines() if line.startswith("metrics_port")
        )
    )


def scrape_text(host, port: int | None = None) -> str:
    # testinfra strips the last newline, which the text format ends with.
    port = port or metrics_port(host)
    return host.check_output(f'python3 -c "{SCRAPE.format(port=port)}"') + "\n"


def scrape(host, port: int | None = None) -> dict[str, float]:
    """Every sample of one scrape: 'name{label="value",...}' -> value."""
    samples = {}
    for family in text_string_to_metric_families(scrape_text(host, port)):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def moved(before: dict[str, float], after: dict[str, float], names: list[str]) -> dict[str, float]:
    return {name: after.get(name, 0.0) - before.get(name, 0.0) for name in names}


def filtered(direction: str, result: str, rule: str, via: str = "smtp") -> str:
    """The sample name of one kind of the filter's decisions."""
    return (
        f'chatmail_filter_messages_total{{direction="{direction}",result="{result}",'
        f'rule="{rule}",via="{via}"}}'
    )


def remote_deliveries(channel: str, result: str, code: int) -> str:
    """The sample name of one kind of the delivery service's outcomes."""
    return (
        f'chatmail_remote_deliveries_total{{channel="{channel}",code="{code}",result="{result}"}}'
    )
