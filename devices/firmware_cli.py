"""``lantern firmware``: validate firmware configuration files, render the configuration
a device receives, and regenerate the JSON Schemas.

Registered as a ``lantern`` sub-command through the ``lantern.commands`` entry point.
Results go to stdout and problems to stderr as plain lines (``file: field.path:
message``), so they can be read by a person or grepped by a script. Exit codes: 0 when
everything is valid, 1 when a configuration is invalid, 2 for a usage error.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from devices import firmware as fw

logger = logging.getLogger(__name__)

__all__ = ["app"]

app = typer.Typer(
    name="firmware",
    help="Device configuration as data: validate profile, device and site files, render "
    "the configuration one device receives (profile + site + device overrides, with "
    "version and sha256), and regenerate the JSON Schemas of the files.",
    no_args_is_help=True,
)

ConfigDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--config-dir",
        envvar=fw.CONFIG_DIR_ENV,
        file_okay=False,
        help="Firmware configuration folder (with profiles/ and devices/); default: the "
        "firmware_configs folder installed with Lantern",
    ),
]


def _config_dir(option: Path | None) -> Path:
    return option if option is not None else fw.default_config_dir()


def _fail(lines: list[str], code: int = 1) -> typer.Exit:
    for line in lines:
        typer.echo(line, err=True)
    return typer.Exit(code)


def _load_profiles(config_dir: Path) -> tuple[dict[str, fw.LoadedProfile], list[fw.FieldIssue]]:
    """The valid profiles of ``config_dir/profiles`` and the issues of the others."""
    folder = config_dir / "profiles"
    if not folder.is_dir():
        return {}, [fw.FieldIssue("", "profiles folder not found", str(folder))]
    profiles: dict[str, fw.LoadedProfile] = {}
    issues: list[fw.FieldIssue] = []
    for path in sorted(folder.glob("*.y*ml")):
        try:
            profiles[path.stem] = fw.LoadedProfile(path.stem, fw.load_profile(path), str(path))
        except fw.ConfigError as exc:
            issues.extend(exc.issues)
    return profiles, issues


def _yaml_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


@app.command()
def validate(
    paths: Annotated[
        list[Path],
        typer.Argument(
            exists=True,
            help="YAML files or folders (searched recursively for *.yaml and *.yml)",
        ),
    ],
    config_dir: ConfigDirOpt = None,
) -> None:
    """Check profile, device and site files; print OK or every bad field with its path.

    What a file is comes from its keys: a profile has `type`, a device file `device_id`,
    a site file `site` and `devices`. Profiles are checked alone; device and site files
    are rendered against the profiles of --config-dir, so an override that breaks a
    profile's rules, or switches on something the device model cannot do, is reported
    too. Exits 1 if any file is invalid.
    """
    files: list[Path] = []
    for path in paths:
        files.extend(p for p in _yaml_under(path) if p not in files)
    if not files:
        raise _fail([f"no YAML files in {', '.join(map(str, paths))}"])
    folder = _config_dir(config_dir)
    profiles, profile_issues = _load_profiles(folder)
    invalid = 0
    for path in files:
        kind, issues = fw.check_file(path, profiles)
        if issues:
            invalid += 1
            typer.echo(f"FAIL  {path}" + (f" ({kind})" if kind else ""))
            for issue in issues:
                typer.echo(f"  {issue}")
        else:
            typer.echo(f"OK    {path} ({kind})")
    if profile_issues:
        typer.echo(f"note: profiles that could not be loaded from {folder / 'profiles'}:")
        for issue in profile_issues:
            typer.echo(f"  {issue}")
    typer.echo(f"{len(files)} file(s): {len(files) - invalid} valid, {invalid} invalid")
    if invalid:
        raise typer.Exit(1)


@app.command()
def render(
    device: Annotated[str, typer.Option("--device", help="Device id to render")],
    site_file: Annotated[
        Path | None,
        typer.Option(
            "--site-file",
            exists=True,
            dir_okay=False,
            help="Site file listing the device; its profile_overrides apply too",
        ),
    ] = None,
    devices: Annotated[
        Path | None,
        typer.Option(
            "--devices",
            exists=True,
            file_okay=False,
            help="Folder of <device_id>.yaml device files; default: devices/ in --config-dir",
        ),
    ] = None,
    previous: Annotated[
        Path | None,
        typer.Option(
            "--previous",
            exists=True,
            dir_okay=False,
            help="The device's last rendered configuration (JSON, as printed here): the "
            "version stays if the content is the same and goes up by one if not; "
            "without it the version is 1",
        ),
    ] = None,
    config_dir: ConfigDirOpt = None,
) -> None:
    """Print the configuration one device receives, with its version and sha256.

    Layers, last wins: the device's profile (its `profile`, else its model's default),
    then the site's profile_overrides for that profile (with --site-file), then the
    device's own overrides. Mappings merge key by key; anything else replaces. The
    result is validated and checked against the device model. The sha256 is over the
    canonical JSON of `config` (sorted keys, no spaces), so the same settings always
    give the same hash. The hub publishes version, sha256 and config as the body of
    the device's retained config message.
    """
    if site_file is not None and devices is not None:
        raise _fail(["give --site-file or --devices, not both"], code=2)
    folder = _config_dir(config_dir)
    try:
        profiles = fw.load_profiles(folder / "profiles")
        last: fw.RenderedConfig | None = None
        if previous is not None:
            try:
                last = fw.RenderedConfig.model_validate_json(previous.read_bytes())
            except ValidationError as exc:
                raise _fail([f"{previous}: not a rendered configuration: {exc}"]) from None
        if site_file is not None:
            site = fw.load_site(site_file)
            rendered = fw.render_site_device(
                site, device, profiles, source=str(site_file), previous=last
            )
        else:
            device_obj, path = fw.find_device(device, devices or folder / "devices")
            rendered = fw.render(device_obj, profiles, device_source=str(path), previous=last)
    except fw.ConfigError as exc:
        raise _fail([str(issue) for issue in exc.issues]) from None
    except ValueError as exc:  # a --previous file of another device
        raise _fail([str(exc)]) from None
    typer.echo(json.dumps(rendered.model_dump(mode="json"), indent=2, sort_keys=True))


@app.command()
def schema(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            file_okay=False,
            help="Folder to write profile, device and site .schema.json files into "
            "(the repository's is firmware_configs/schema)",
        ),
    ],
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Write nothing; exit 1 if the files in --out differ from the models",
        ),
    ] = False,
) -> None:
    """Generate the JSON Schemas of firmware files from the configuration models.

    The schemas describe each file's structure, types and ranges, for editors and other
    tools; rules between fields (in_violation at most normal, ...) and checks against
    the device model are made by `lantern firmware validate`.
    """
    if check:
        stale = [
            name
            for name, document in fw.schema_documents().items()
            if not (out / name).is_file()
            or (out / name).read_text(encoding="utf-8") != fw.dump_schema(document)
        ]
        if stale:
            raise _fail(
                [
                    f"{out / name}: out of date; run lantern firmware schema --out {out}"
                    for name in stale
                ]
            )
        typer.echo(f"schemas in {out} are up to date")
        return
    for path in fw.write_schemas(out):
        typer.echo(f"wrote {path}")
