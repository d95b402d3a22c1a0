"""``lantern hub rebuild-galleries`` (hub.gallery_cli.rebuild_galleries) on an SQLite
registry in a data directory, and the hub loading what it saved."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import typer
from typer.testing import CliRunner

from hub.db.engine import make_engine, write_session
from hub.db.models import FaceTemplate, Person
from hub.galleries import DB_STATE_FILE, GalleryService, gallery_dir
from hub.gallery_cli import rebuild_galleries


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("rebuild-galleries")(rebuild_galleries)
    app.command("noop", hidden=True)(lambda: None)  # keep rebuild-galleries a sub-command
    return app


def test_rebuild_galleries_saves_what_the_hub_then_loads(
    sqlite_template: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(sqlite_template, data / "lantern.db")
    engine = make_engine(f"sqlite:///{data / 'lantern.db'}")
    rng = np.random.default_rng(7)
    with write_session(engine) as session:
        for i, category in enumerate(["watchlist", "watchlist", "watchlist", "missing"]):
            person = Person(category=category, display_name=f"p{i}")
            session.add(person)
            session.flush()
            for _ in range(2):
                v = rng.standard_normal(128).astype("<f4")
                v /= np.linalg.norm(v)
                session.add(
                    FaceTemplate(
                        person_id=person.id,
                        model_id="dlib-resnet-v1",
                        dim=128,
                        embedding=v.tobytes(),
                    )
                )

    result = CliRunner().invoke(_app(), ["rebuild-galleries", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert "missing/dlib-resnet-v1: 2 templates of 1 persons" in result.output
    assert "watchlist/dlib-resnet-v1: 6 templates of 3 persons" in result.output
    assert "2 galleries saved" in result.output
    cache = data / "galleries"
    for category in ("missing", "watchlist"):
        directory = gallery_dir(cache, category, "dlib-resnet-v1")
        assert (directory / "CURRENT").is_file() and (directory / DB_STATE_FILE).is_file()

    service = GalleryService(cache_dir=cache)
    loaded = service.load_from_db(engine)
    assert {(c.gallery, c.source, c.templates) for c in loaded} == {
        ("missing", "cache", 2),
        ("watchlist", "cache", 6),
    }
    engine.dispose()

    both = CliRunner().invoke(
        _app(), ["rebuild-galleries", "--data-dir", str(data), "--database-url", "sqlite://"]
    )
    assert both.exit_code != 0


def test_rebuild_galleries_of_an_empty_database(sqlite_template: Path, tmp_path: Path) -> None:
    shutil.copy(sqlite_template, tmp_path / "lantern.db")
    result = CliRunner().invoke(_app(), ["rebuild-galleries", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "nothing to build" in result.output and "0 galleries saved" in result.output
