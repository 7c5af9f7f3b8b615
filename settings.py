"""model.py's hyperparameter block (between its first two '# ----' lines), read as text by the
scripts that need its defaults (reproduce.py, benchmark.py): model.py is a script, never imported."""
import ast
import os

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model.py")


def model_settings(path=MODEL):
    """{name: default} of the block's plain assignments (str, int, float, bool). Raises ValueError."""
    with open(path) as f:
        lines = f.read().splitlines()
    marks = [i for i, line in enumerate(lines) if line.startswith("# ----")]
    if len(marks) < 2:
        raise ValueError(f"{path}: no hyperparameter block between two '# ----' lines")
    settings = {}
    for node in ast.parse("\n".join(lines[marks[0] + 1:marks[1]])).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = ast.literal_eval(node.value)
            if type(value) in (str, int, float, bool):
                settings[node.targets[0].id] = value
    return settings
