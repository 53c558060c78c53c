"""Draw a job's figures and write its report: one HTML file, every figure inline, no script.

Usage: report.py CONFIG.json

CONFIG: {"title", "workflow", "params", "inputs", "outputs": [PATH, ...], "report": HTML,
         "job_mark": MARK, "figures": [{"path", "kind": "MODULE.FUNCTION", "caption", "args"}]}

Each figure is drawn by FUNCTION(args, path) of draw_MODULE.py beside this script, which may
return a line with what it found. A figure that cannot be drawn becomes a picture saying so,
and the report says why: the job's results are not lost to a figure. The controller replaces
MARK with the request, the versions and the timings when it packages the job.
"""

import base64
import html
import importlib.metadata
import importlib.util
import json
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).parent
STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 60em; color: #222;
       line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; }
figure { margin: 1.5em 0; page-break-inside: avoid; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.95em; } .note { color: #444; } .error { color: #a00; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def load(module):
    spec = importlib.util.spec_from_file_location(module, HERE / f"{module}.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def draw(figure, modules):
    """Draw one figure; (note, error). On error the file still gets a picture saying so."""
    module, _, function = figure["kind"].partition(".")
    try:
        if module not in modules:
            modules[module] = load(f"draw_{module}")
        note = getattr(modules[module], function)(figure["args"], figure["path"])
        return (note or ""), None
    except Exception as exc:  # a figure must not cost the job its results
        traceback.print_exc()
        drawing = modules.get("drawing") or load("drawing")
        modules["drawing"] = drawing
        plot, axes = drawing.subplots(figsize=(6, 1.5))
        axes.axis("off")
        axes.text(
            0.5,
            0.5,
            "This figure could not be drawn:\n" + str(exc)[:200],
            ha="center",
            va="center",
            wrap=True,
        )
        drawing.save(plot, figure["path"])
        return "", f"{type(exc).__name__}: {exc}"


def versions():
    found = {"python": sys.version.split()[0]}
    for package in ("specify-lmpy", "numpy", "matplotlib"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def image(path):
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(Path(path).name)}">'


def page(config, drawn, seconds):
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # No request may leave the page: images are inline, nothing else is loaded.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">",
        f"<title>{e(config['title'])}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(config['title'])}</h1>",
        f"<p>Workflow <b>{e(config['workflow'])}</b>. {len(drawn)} figure(s), drawn on a worker "
        f"in {seconds:.1f} s.</p>",
        config["job_mark"],
        "<h2>Parameters</h2>",
        f"<pre>{e(json.dumps(config['params'], indent=2, sort_keys=True))}</pre>",
        "<h2>Inputs</h2><table><tr><th>input</th><th>file in the job</th></tr>",
    ]
    for name, value in sorted(config["inputs"].items()):
        files = value if isinstance(value, list) else [value]
        parts.append(f"<tr><td>{e(name)}</td><td>{e(', '.join(files))}</td></tr>")
    parts.append("</table>")
    if drawn:
        parts.append("<h2>Figures</h2>")
    for number, (figure, note, error) in enumerate(drawn, start=1):
        relative = figure["path"].removeprefix("outputs/")
        parts.append(f'<figure id="figure-{number}">{image(figure["path"])}<figcaption>')
        parts.append(f"<b>Figure {number}.</b> {e(figure['caption'])} ")
        if note:
            parts.append(f'<span class="note">{e(note)}</span> ')
        if error:
            parts.append(f'<span class="error">Not drawn: {e(error)}</span> ')
        parts.append(f"<i>({e(relative)})</i></figcaption></figure>")
    parts.append("<h2>Files</h2><p>Paths below <code>outputs/</code> in the package.</p><ul>")
    for path in config["outputs"]:
        parts.append(f"<li>{e(path.removeprefix('outputs/'))}</li>")
    parts.append("</ul><h2>Drawn with</h2><table>")
    for name, version in versions().items():
        parts.append(f"<tr><td>{e(name)}</td><td>{e(version)}</td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"


def main(args):
    if len(args) != 1:
        sys.exit(__doc__)
    config = json.loads(Path(args[0]).read_text())
    start = time.monotonic()
    modules = {}
    drawn = []
    for figure in config["figures"]:
        note, error = draw(figure, modules)
        drawn.append((figure, note, error))
    report = Path(config["report"])
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(page(config, drawn, time.monotonic() - start), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
