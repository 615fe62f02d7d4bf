"""The site side of federated statistics (workflow ``fedstats``): answer both passes from a CSV.

    {"module": "shoal.fl.clients.stats", "args": "--data data/{site}.csv --min-count 10"}

The CSV has a header naming the features and one row of numbers per record (empty lines are
skipped; any other non-numeric or non-finite cell is an error naming its line and column).
``{site}`` in ``--data`` becomes this site's name; a relative path is looked up in the job's
app ``custom/`` folder first, then in the working directory.

With fewer rows than the threshold (the larger of ``--min-count`` and the server's
``min_count``) the site withholds: it sends no numbers at all, not even its row count.

Every task is answered from the CSV and the task's meta alone (the file is read again for each
task), so the module works the same under the simulator, which runs it once per task.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import numpy.typing as npt

from shoal import settings
from shoal.fl import FLModel
from shoal.fl import client as flare
from shoal.workflows.fedstats import WITHHELD_REASON, site_pass1, site_pass2


class DataError(ValueError):
    """The site's data file is missing or not a numeric table."""


def read_table(path: Path) -> tuple[list[str], npt.NDArray[np.float64]]:
    """(feature names, rows × features float64 array) of a numeric CSV with a header."""
    try:
        f = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot read the data file {path}: {exc.strerror or exc}") from None
    with f:
        reader = csv.reader(f)
        header: list[str] | None = None
        rows: list[list[float]] = []
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue  # empty line
            if header is None:
                header = [cell.strip() for cell in row]
                if any(not name for name in header):
                    raise DataError(f"{path}, line {reader.line_num}: the header has an empty column name")
                if len(set(header)) != len(header):
                    raise DataError(f"{path}, line {reader.line_num}: the header repeats a column name")
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path}, line {reader.line_num}: {len(row)} cells, "
                    f"the header names {len(header)} columns"
                )
            values: list[float] = []
            for name, cell in zip(header, row, strict=True):
                try:
                    value = float(cell)
                except ValueError:
                    raise DataError(
                        f"{path}, line {reader.line_num}, column {name!r}: {cell.strip()!r} is not a number"
                    ) from None
                if not np.isfinite(value):
                    raise DataError(
                        f"{path}, line {reader.line_num}, column {name!r}: "
                        f"{cell.strip()!r} is not a finite number"
                    )
                values.append(value)
            rows.append(values)
    if header is None:
        raise DataError(f"{path} is empty: expected a header line naming the features")
    data = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(header))
    return header, data


def _app_dirs() -> list[Path]:
    """The job's app folder: site agents and the simulator set ``SHOAL_APP_DIR`` for the
    training process (``shoal.fl.client.app_dir()`` reads the same)."""
    env = settings.text(settings.APP_DIR)
    return [Path(env).resolve()] if env else []


def resolve_data(template: str, site: str) -> Path:
    """``--data`` with ``{site}`` expanded; a relative path is looked up in the app's custom/
    folder first, then taken relative to the working directory."""
    path = Path(template.replace("{site}", site))
    if path.is_absolute():
        return path
    for app in _app_dirs():
        candidate = app / "custom" / path
        if candidate.exists():
            return candidate
    return Path.cwd() / path


def answer(data_path: Path, site_min_count: int, meta: dict[str, object]) -> FLModel:
    """This site's answer to one ``stats`` task (pass 1 or pass 2, per ``meta["pass"]``)."""
    features, table = read_table(data_path)
    server_min = meta.get("min_count", 0)
    threshold = max(site_min_count, int(server_min) if isinstance(server_min, int | float) else 0, 1)
    if table.shape[0] < threshold:
        # Nothing else leaves the site: not the row count, not the feature names.
        return FLModel(params={}, meta={"withheld": True, "reason": WITHHELD_REASON})
    step = meta.get("pass", 1)
    if step == 1:
        return FLModel(
            params=site_pass1(table), meta={"pass": 1, "features": features}, num_examples=table.shape[0]
        )
    if step == 2:
        expected = meta.get("features")
        if expected is not None and expected != features:
            raise DataError(f"{data_path}: columns {features} differ from the job's features {expected}")
        mean = meta.get("mean")
        ranges = meta.get("ranges")
        bins = meta.get("bins", 0)
        if not isinstance(mean, list) or not isinstance(ranges, list) or not isinstance(bins, int):
            raise ValueError("pass 2 needs 'mean', 'ranges' and 'bins' in the task's meta")
        return FLModel(
            params=site_pass2(table, mean, ranges, bins),
            meta={"pass": 2, "features": features},
            num_examples=table.shape[0],
        )
    raise ValueError(f"unknown statistics pass {step!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shoal.fl.clients.stats")
    parser.add_argument("--data", required=True, help="CSV file; {site} becomes the site name")
    parser.add_argument(
        "--min-count", type=int, default=10, help="withhold everything below this many rows (default 10)"
    )
    opts = parser.parse_args(argv)
    if opts.min_count < 1:
        parser.error("--min-count must be at least 1")
    flare.init()
    site = flare.site_name()
    path = resolve_data(opts.data, site)
    while flare.is_running():
        model = flare.receive()
        if model is None:
            break
        try:
            result = answer(path, opts.min_count, model.meta)
        except DataError as exc:
            raise SystemExit(f"{site}: {exc}") from None
        state = "withheld" if result.meta.get("withheld") else "answered"
        print(f"{site}: statistics pass {model.meta.get('pass', 1)} {state}", flush=True)
        flare.send(result)


if __name__ == "__main__":
    main()
