"""The benchmarks' shared parts: the JSON figures and the disk and crypto floors."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks._common import Figure, data_sync_ms, pipeline_ms, seal_and_hash_ms, write_json


class TestFigures:
    def test_json_holds_one_record_per_figure_with_the_agreed_fields(self, tmp_path: Path) -> None:
        figures = [
            Figure("vault / Orthanc, 1 assoc", 0.5, "x", 2.0),
            Figure("floor", 2.6, "ms", higher_is_better=False),
        ]
        write_json(figures, tmp_path / "out.json")
        records = json.loads((tmp_path / "out.json").read_text())
        assert records == [
            {
                "name": "vault / Orthanc, 1 assoc",
                "value": 0.5,
                "unit": "x",
                "target": 2.0,
                "higher_is_better": True,
            },
            {
                "name": "floor",
                "value": 2.6,
                "unit": "ms",
                "target": None,
                "higher_is_better": False,
            },
        ]

    def test_a_lower_is_better_target_is_met_at_or_below_it(self) -> None:
        assert Figure("rss ratio", 1.05, "x", 1.10, higher_is_better=False).meets_target
        assert not Figure("rss ratio", 1.2, "x", 1.10, higher_is_better=False).meets_target
        assert Figure("floor", 2.6, "ms", higher_is_better=False).meets_target is None


class TestFloors:
    def test_the_data_sync_floor_is_measured_and_leaves_nothing_behind(
        self, tmp_path: Path
    ) -> None:
        milliseconds = data_sync_ms(tmp_path / "sync", 4096, count=5)
        assert milliseconds > 0
        assert list((tmp_path / "sync").iterdir()) == []

    def test_sealing_and_hashing_is_measured_over_every_segment(self) -> None:
        assert seal_and_hash_ms(3 * 64 * 1024 + 1, count=2) > 0

    def test_the_pipeline_alone_stores_every_file_it_is_given(self, tmp_path: Path) -> None:
        from dicom_ingest.synthetic import encode, make_ct_series
        from vault.catalog.models import Instance
        from vault.core import open_vault
        from vault.settings import Settings

        files = [encode(ds) for ds in make_ct_series(3, rows=16, columns=16, seed=4)]
        wall, cpu = pipeline_ms(tmp_path / "data", files)
        assert wall > 0 and cpu > 0
        vault = open_vault(Settings(data_dir=tmp_path / "data"))
        try:
            with vault.catalog.session() as session:
                assert session.query(Instance).count() == 3
        finally:
            vault.close()
