"""`python -m nbkit`: train from the shell, export a config to other tools, list the knobs.

    python -m nbkit train --config my_run.yaml --set learning_rate=3e-4 --set lora_rank=16
    python -m nbkit export --format llamafactory --set finetuning_type=lora -o lf_sft.yaml
    python -m nbkit export --format training_args --style python
    python -m nbkit export --format trl --config my_run.yaml -o trl_sft.py
    python -m nbkit show-config
    python -m nbkit study run lr_study.yaml --workers 2          # a study of many runs (nbkit.core.study)
    python -m nbkit study run lr_study.yaml --backend ray --ray-address HEAD:6379 --storage postgresql+psycopg2://...
    python -m nbkit study show --study lr_study                  # its trials, warnings and analysis
    python -m nbkit study best --study lr_study -o best.yaml     # the winner as a --config file (or --format trl ...)
    python -m nbkit class create notebooks/classes/01_learning_rate.yaml --storage sqlite:////shared/class.db
    python -m nbkit class join lr101 --storage sqlite:////shared/class.db --student ana   # a student in a terminal
    python -m nbkit class board lr101 --storage sqlite:////shared/class.db --plots board/  # the instructor's board
    python -m nbkit class dashboard lr101 --storage sqlite:////shared/class.db             # optuna-dashboard on it
    python -m nbkit app 1                                     # chapter 1's panel as a web page (Voila, code hidden)
    python -m nbkit app instructor -p class_name lr101 -p storage sqlite:////shared/class.db   # the board, projected
    accelerate launch --num_processes 2 -m nbkit train --config my_run.yaml   # several processes (DDP)
    torchrun --nproc_per_node 2 -m nbkit train --config my_run.yaml

`--set key=value` values are strings converted to the field's type, as in a YAML file.
A bad config prints one line on stderr and exits with status 2.

Only `train` and `study run` (and their runs) import torch, transformers and peft, inside the functions
that need them: checking a config, exporting it, `--help` and reading a stored study answer at once.
"""

import argparse
import os
import sys
from pathlib import Path


from nbkit.core.classroom import STUDENT_NICE
from nbkit.core.config import ConfigError, TrainConfig, field_docs, read_yaml_mapping
from nbkit.core.data import DataFileError, check_dataset
from nbkit.core.export import EXPORT_FORMATS, export_text
from nbkit.core.i18n import LanguageError, _, get_language
from nbkit.core.study import DEFAULT_STORAGE
from nbkit.core.study_export import BEST_FORMATS


def main(argv=None) -> int:
    try:
        get_language()  # NBKIT_LANG, checked before the parser is built: its help is in that language
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except (ConfigError, DataFileError, LanguageError) as err:  # the user's input, named: a line, not a traceback
        print(f"nbkit: error: {err}", file=sys.stderr)  # "nbkit: error: " in every language: scripts grep it
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nbkit", description=_("nbkit: fine-tuning hyperparameter lab"))
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help=_("run one fine-tune and print its summary"))
    add_config_options(train)
    train.set_defaults(handler=run_train)

    export = commands.add_parser(
        "export", help=_("write the config for LLaMA-Factory, TRL, HF TrainingArguments or PEFT"))
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    export.add_argument("--style", choices=("json", "python"), default="json",
                        help=_("training_args and lora only: JSON (default) or Python code"))
    export.add_argument("-o", "--output", metavar="FILE", help=_("write to FILE instead of stdout"))
    add_config_options(export)
    export.set_defaults(handler=run_export)

    show = commands.add_parser("show-config", help=_("every field with its value and why it has that default"))
    add_config_options(show)
    show.set_defaults(handler=run_show_config)

    study = commands.add_parser("study", help=_("many fine-tunes answering one question, run by Optuna"))
    study_commands = study.add_subparsers(dest="study_command", required=True)
    study_run = study_commands.add_parser("run", help=_("run (or resume) the study a YAML spec describes"))
    study_run.add_argument("spec", metavar="FILE.yaml", help=_("the study spec (nbkit.core.study.StudySpec)"))
    study_run.add_argument("--workers", type=int,
                           help=_("workers side by side (default: one per core for the tiny model on a CPU, else 1)"))
    study_run.add_argument("--storage", metavar="URL",
                           help=_("override the spec's storage, e.g. postgresql+psycopg2://..."))
    study_run.add_argument("--backend", default="local", help=_("local (default), inprocess, papermill or ray"))
    study_run.add_argument("--ray-address", metavar="ADDR",
                           help=_("Ray cluster to join (default: RAY_ADDRESS, else local)"))
    study_run.set_defaults(handler=run_study_command)
    study_show = study_commands.add_parser("show", help=_("a stored study's trials, warnings and analysis"))
    study_show.add_argument("--storage", metavar="URL", default=DEFAULT_STORAGE,
                            help=_("default: {storage}").format(storage=DEFAULT_STORAGE))
    study_show.add_argument("--study", metavar="NAME", help=_("the study's name (without it: the studies stored)"))
    study_show.add_argument("--plots", metavar="DIR", help=_("also write the study's figures (PNG) into DIR"))
    study_show.set_defaults(handler=run_study_show)
    study_best = study_commands.add_parser(
        "best", help=_("the best trial's configuration, for --config or another tool"))
    study_best.add_argument("--storage", metavar="URL", default=DEFAULT_STORAGE,
                            help=_("default: {storage}").format(storage=DEFAULT_STORAGE))
    study_best.add_argument("--study", metavar="NAME", required=True, help=_("the study's name"))
    study_best.add_argument("--format", choices=BEST_FORMATS, default="yaml",
                            help=_("yaml (default): TrainConfig fields, as --config reads; others as `export` writes"))
    study_best.add_argument("--style", choices=("json", "python"), default="json",
                            help=_("training_args and lora only: JSON (default) or Python code"))
    study_best.add_argument("-o", "--output", metavar="FILE", help=_("write to FILE instead of stdout"))
    study_best.set_defaults(handler=run_study_best)
    add_class_commands(commands)
    add_bake_command(commands)
    add_app_command(commands)
    translate = commands.add_parser("translate", help=_("the Chinese edition: update the catalogues, regenerate "
                                                        "notebooks/zh/ (nbkit/interfaces/translate.py)"))
    translate.add_argument("--check", action="store_true",
                           help=_("change nothing; list what is out of date, untranslated, fuzzy or off the glossary "
                                  "(exit 1 if anything is)"))
    translate.set_defaults(handler=run_translate)
    return parser


def add_class_commands(commands) -> None:
    """`class create|join|board|dashboard`: a workshop's shared experiment (nbkit/interfaces/workshop.py)."""
    klass = commands.add_parser("class",
                                help=_("a workshop: the class as one study, students, the instructor's board"))
    class_commands = klass.add_subparsers(dest="class_command", required=True)
    storage = dict(metavar="URL", default=DEFAULT_STORAGE,
                   help=_("the class's database (default: {storage}); SQLite on a shared disk, or "
                          "postgresql+psycopg2://USER@HOST:PORT/DB for a room of laptops")
                   .format(storage=DEFAULT_STORAGE))
    create = class_commands.add_parser("create", help=_("create a class from a class spec (a study spec + chapter:)"))
    create.add_argument("spec", metavar="FILE.yaml", help=_("e.g. notebooks/classes/01_learning_rate.yaml"))
    create.add_argument("--storage", metavar="URL", help=_("override the spec's storage"))
    create.set_defaults(handler=run_class_create)
    join = class_commands.add_parser("join", help=_("a student in a terminal: train the class's configurations"))
    join.add_argument("name", metavar="NAME", help=_("the class's name"))
    join.add_argument("--storage", **storage)
    join.add_argument("--student", required=True, help=_("your name, as the board shows it"))
    join.add_argument("--output-dir", default="runs", help=_("your runs go to OUTPUT_DIR/classes/NAME/STUDENT"))
    join.add_argument("--max-runs", type=int, metavar="N", help=_("train at most N configurations, then leave"))
    join.add_argument("--threads", type=int,
                      help=_("torch threads (default: torch's own; 1 when many students share a machine)"))
    join.add_argument("--nice", type=int, default=STUDENT_NICE, metavar="N",
                      help=_("lower this student's CPU priority by N, 0-19 (default {nice}): on a machine "
                             "the room shares, the training yields to what someone is watching (the board, the "
                             "panels); alone on a laptop it changes nothing").format(nice=STUDENT_NICE))
    join.set_defaults(handler=run_class_join)
    board = class_commands.add_parser("board", help=_("the instructor's board in a terminal, as runs arrive"))
    board.add_argument("name", metavar="NAME", help=_("the class's name"))
    board.add_argument("--storage", **storage)
    board.add_argument("--plots", metavar="DIR",
                       help=_("also keep the board's figures (PNG) in DIR, redrawn as runs arrive"))
    board.add_argument("--every", type=float, default=1.0, help=_("seconds between looks at the class (default 1)"))
    board.add_argument("--once", action="store_true", help=_("show the board once and end"))
    board.set_defaults(handler=run_class_board)
    dash = class_commands.add_parser("dashboard", help=_("Optuna's web dashboard (optuna-dashboard) on the class"))
    dash.add_argument("name", metavar="NAME", help=_("the class's name"))
    dash.add_argument("--storage", **storage)
    dash.add_argument("--host", default="127.0.0.1", help=_("0.0.0.0 to let the room's laptops see it"))
    dash.add_argument("--port", type=int, default=8080)
    dash.set_defaults(handler=run_class_dashboard)


def add_app_command(commands) -> None:
    """`app CHAPTER|instructor`: a chapter's panel or the instructor's board as a web page (nbkit/interfaces/app.py)."""
    app = commands.add_parser(
        "app", help=_("a chapter's panel, or the instructor's board, as a web page with the code hidden (Voila)"),
        description=_("Serve a chapter's panel, or the instructor's board, with Voila (code hidden), for projecting "
                      "in class. The page runs the chapter's imports, parameters, set-up and panel cells only (not "
                      "its experiments), so it shows the panel within seconds. Relative paths mean the current "
                      "directory; a chapter page's runs go to runs/app/CHAPTER unless -p output_dir says otherwise."))
    app.add_argument("chapter", metavar="CHAPTER",
                     help=_("a chapter with a panel, by name or number (01_learning_rate, 01, 1), or 'instructor' "
                            "(notebooks/instructor.ipynb: the live board)"))
    app.add_argument("-p", "--parameter", nargs=2, metavar=("NAME", "VALUE"), action="append", default=[],
                     help=_("a value for the notebook's parameters cell, as papermill's -p (e.g. -p max_samples 200; "
                            "instructor: -p class_name lr101 -p storage sqlite:////shared/class.db); repeat for more"))
    app.add_argument("--port", type=int, default=8866, help=_("default {port}").format(port=8866))
    app.add_argument("--host", default="127.0.0.1",
                     help=_("default 127.0.0.1 (this machine); 0.0.0.0 lets the room's laptops open it"))
    app.add_argument("--browser", action=argparse.BooleanOptionalAction, default=False,
                     help=_("open the page in this machine's browser (default --no-browser: the URL is printed)"))
    app.set_defaults(handler=run_app)


def add_bake_command(commands) -> None:
    """`bake CHAPTER`: a chapter run headless once, its runs kept for a class or a learner without the time or GPU."""
    bake = commands.add_parser(
        "bake", help=_("run a chapter headless once and keep its runs (nbkit/interfaces/bake.py)"),
        description=_("Run a chapter headless (papermill) into OUTPUT_DIR/MODEL/CHAPTER/: its runs, results.json, "
                      "figures and the executed notebook, outputs and all. The panel (runs=baked_runs(folder)) and "
                      "the board (baked_board(folder)) read them as they read live runs."))
    bake.add_argument("chapter", metavar="CHAPTER", help=_("by name or number (01_learning_rate, 01, 1)"))
    bake.add_argument("-p", "--parameter", nargs=2, metavar=("NAME", "VALUE"), action="append", default=[],
                      help=_("a value for the chapter's parameters cell, as papermill's -p (e.g. -p model "
                             "smollm2-135m)"))
    bake.add_argument("--output-dir", default="baked", help=_("where the baked folders go (default: baked)"))
    bake.set_defaults(handler=run_bake)


def run_bake(args) -> int:
    from nbkit.interfaces.bake import bake

    folder = bake(args.chapter, dict(args.parameter), args.output_dir)
    print(_("baked {folder}: open {notebook} there, or load its runs with nbkit.interfaces.bake.baked_runs({path})")
          .format(folder=folder, notebook=f"{folder.name}.ipynb", path=repr(str(folder))))
    return 0


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE.yaml", help=_("start from this YAML file (default: the defaults)"))
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                        help=_("override one field; repeat for more"))


def load_config(args) -> TrainConfig:
    """Defaults, or the --config file, with the --set overrides applied; checked."""
    values = {}
    if args.config:
        values = read_yaml_mapping(args.config)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(_("--set {item}: expected KEY=VALUE, e.g. --set learning_rate=3e-4")
                              .format(item=repr(item)))
        values[key.strip()] = value
    return TrainConfig.from_dict(values)


def run_train(args) -> int:
    cfg = load_config(args)
    check_dataset(cfg.dataset)  # a bad file of the user's is refused before the heavy imports
    from nbkit.core.train import train  # heavy; only this command needs it

    run = train(cfg)
    if run.path is not None:  # under `accelerate launch` / `torchrun` only the main process writes and prints
        print(format_summary(run))
    return 0


# Summary entries that say nothing about the training itself.
HIDDEN_SUMMARY_KEYS = ("status", "best_epoch", "pid", "host", "started_at", "finished_at")


def format_summary(run) -> str:
    """status, best epoch and folder first, then the rest of summary.json, numbers to 4 digits."""
    lines = [_("status:     {status}").format(status=run.status),
             _("best epoch: {epoch}").format(epoch=run.best_epoch),
             _("run folder: {path}").format(path=run.path)]
    for key, value in run.summary.items():
        if key in HIDDEN_SUMMARY_KEYS or value is None:
            continue
        shown = f"{value:.4g}" if isinstance(value, float) else value
        lines.append(f"  {key}: {shown}")
    return "\n".join(lines)


def run_study_command(args) -> int:
    """Run or resume a study; a line per finished trial, then the summary. Exit 1 if fewer than
    n_trials trials ended COMPLETE or PRUNED (a trial raised: see its line; run again to redo it)."""
    from optuna.trial import TrialState

    from nbkit.core.study import StudySpec, run_study, spec_record

    spec = StudySpec.from_yaml(args.spec)
    try:
        study = run_study(spec, workers=args.workers, backend=args.backend, storage=args.storage,
                          ray_address=args.ray_address)
    except KeyboardInterrupt:  # Ctrl-C: run_study has said in one line what was kept and how to resume
        return 130
    wanted = spec_record(spec)["n_trials"]
    ended = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    if ended < wanted:
        print(_("nbkit: {ended} of {wanted} trials ended; run the same command again to redo the rest")
              .format(ended=ended, wanted=wanted), file=sys.stderr)
        return 1
    return 0


def run_study_show(args) -> int:
    """A stored study in words (nbkit.core.study_analysis.report_lines: the trials table, the best
    trial, edge warnings, each list's winner, starved values, the isolation table, knob importance and
    "is this study big enough?"); its figures too with --plots, and a line for each figure this study
    cannot have. Without --study: the names stored."""
    import optuna

    from nbkit.core import study_analysis as analysis
    from nbkit.core.study import check_stored, load_study, open_storage

    check_stored(args.storage)
    if not args.study:
        names = optuna.study.get_all_study_names(open_storage(args.storage))
        print("\n".join(names) if names else _("no study in {storage}").format(storage=args.storage))
        return 0
    study = load_study(args.storage, args.study)
    print("\n".join(analysis.report_lines(study)))
    if args.plots:
        from nbkit.views.study_plots import save_study_figures
        notes = []  # a figure this study cannot have: a line saying why, not a traceback
        for path in save_study_figures(study, args.plots, notes=notes):
            print(_("wrote {path}").format(path=path))
        for note in notes:
            print(note)
    return 0


def run_study_best(args) -> int:
    """The best trial's configuration (nbkit.core.study_export) as YAML or an export format."""
    from nbkit.core.study import check_stored, load_study
    from nbkit.core.study_export import best_text

    check_stored(args.storage)
    write_text(best_text(load_study(args.storage, args.study), args.format, args.style), args.output)
    return 0


def run_class_create(args) -> int:
    from nbkit.core.classroom import CLASS_ATTR, class_counts
    from nbkit.interfaces.workshop import create, read_class_spec

    spec, _chapter = read_class_spec(args.spec, args.storage)
    study = create(args.spec, args.storage)
    c = class_counts(study)
    print(_("class {name} (chapter {chapter}) in {storage}: {configurations} configurations, {done} done, {free} free")
          .format(name=repr(spec.study_name), chapter=study.user_attrs[CLASS_ATTR]["chapter"], storage=spec.storage,
                  configurations=c["configurations"], done=c["done"], free=c["free"]))
    print(_("students join in the chapter's panel (Class row: {name}, {storage}, their name) or with")
          .format(name=spec.study_name, storage=spec.storage))
    print(f"  python -m nbkit class join {spec.study_name} --storage {spec.storage} --student NAME")
    print(_("the board: {command}").format(
        command=f"python -m nbkit class board {spec.study_name} --storage {spec.storage}"))
    return 0


def run_class_join(args) -> int:
    """Take a seat and train the class's free configurations until none is free and none is running."""
    from nbkit.interfaces.workshop import join

    if args.max_runs is not None and args.max_runs < 1:
        raise ConfigError(_("--max-runs {n}: allowed: a whole number >= 1 (or leave it out: until the design is "
                            "done)").format(n=args.max_runs))
    if not 0 <= args.nice <= 19:
        raise ConfigError(_("--nice {n}: allowed: a whole number from 0 (the usual priority) to 19 (the lowest)")
                          .format(n=args.nice))
    seat = join(args.name, args.storage, args.student, output_dir=args.output_dir)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    niceness = os.nice(args.nice)  # a batch job's priority: 30 of these on one machine must not starve the board
    c = seat.counts()
    print(_("joined class {name} (chapter {chapter}) as {student}: {free} of {configurations} configurations free; "
            "training at nice {nice} until the design is done (Ctrl-C stops: your configuration goes back to the "
            "class)").format(name=repr(seat.name), chapter=seat.chapter, student=seat.student, free=c["free"],
                             configurations=c["configurations"], nice=niceness), flush=True)
    try:
        done = seat.work(max_runs=args.max_runs)
    except KeyboardInterrupt:
        print(_("stopped: {student}'s configuration in flight goes back to class {name}")
              .format(student=seat.student, name=repr(seat.name)), flush=True)
        return 130
    said = (_("class {name}: {student} trained {done} configuration(s)")
            if args.max_runs is not None and done == args.max_runs
            else _("class {name}: nothing left to train; {student} trained {done} configuration(s)"))
    print(said.format(name=repr(seat.name), student=seat.student, done=done), flush=True)
    return 0


def run_class_board(args) -> int:
    """The board in words, printed again whenever the class changes (with --plots, its figures kept in DIR);
    ends when the design is done and nothing runs, or with Ctrl-C."""
    import time

    from nbkit.core.classroom import board_lines, class_counts, open_class

    study = open_class(args.name, args.storage, read_only=True)
    shown = None
    try:
        while True:
            c = class_counts(study)  # read first: the lines read after it show at least this much
            text = "\n".join(board_lines(study))
            if text != shown:
                print(f"--- {time.strftime('%H:%M:%S')} ---\n{text}", flush=True)
                shown = text
                if args.plots:
                    from nbkit.views.board import save_board
                    save_board(study, args.plots)
            if args.once or (c["free"] == 0 and c["running"] == 0):  # the last state has been shown
                return 0
            time.sleep(args.every)
    except KeyboardInterrupt:
        print(_("board closed; the class goes on"), flush=True)
        return 0


def run_class_dashboard(args) -> int:
    from nbkit.interfaces.workshop import dashboard

    try:
        dashboard(args.name, args.storage, args.host, args.port)
    except KeyboardInterrupt:
        pass
    return 0


def run_translate(args) -> int:
    """Write the catalogues and the Chinese notebooks (or, with --check, say what is not in order)."""
    from nbkit.interfaces import translate

    if args.check:
        found = translate.problems()
        print("\n".join(found) if found else _("the Chinese edition is complete and up to date"))
        return 1 if found else 0
    changed = translate.write()
    left = translate.untranslated()
    print("\n".join(_("wrote {path}").format(path=path.relative_to(translate.NOTEBOOKS_DIR.parent))
                    for path in changed) or _("nothing changed"))
    print((_("{n} entries untranslated or fuzzy:").format(n=len(left)) + "\n" + "\n".join(left)) if left
          else _("{n} entries untranslated or fuzzy").format(n=len(left)))
    return 0


def run_app(args) -> int:
    """Check CHAPTER and the -p values, then serve the page until Ctrl-C."""
    from nbkit.interfaces.app import serve

    return serve(args.chapter, dict(args.parameter), host=args.host, port=args.port, browser=args.browser)


def run_export(args) -> int:
    cfg = load_config(args)
    write_text(export_text(cfg, args.format, args.style), args.output)
    return 0


def write_text(text: str, output: str | None) -> None:
    """To the file `output` (saying so on stderr, so stdout stays clean), or to stdout."""
    if output:
        Path(output).write_text(text)
        print(_("wrote {path}").format(path=output), file=sys.stderr)
    else:
        sys.stdout.write(text)


def run_show_config(args) -> int:
    print(format_fields(load_config(args)))
    return 0


def format_fields(cfg: TrainConfig) -> str:
    """Each field under its section: name = value  # why (a * marks a value that is not the default)."""
    changed = cfg.changed_fields()
    lines, section = [], None
    for field_section, name, comment in field_docs():
        if field_section != section:
            section = field_section
            lines += ["", f"# --- {section} ---"]
        mark = "*" if name in changed else " "
        lines.append(f"{mark}{name} = {getattr(cfg, name)!r}  # {comment}")
    return "\n".join(lines).lstrip("\n")


if __name__ == "__main__":
    raise SystemExit(main())
