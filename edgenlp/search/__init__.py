"""The two searches: which quantisation meets a quality budget, and which training settings train best.

    settings.py   what a recipe (`search:`) and a training stage (`search:`) configure: imports no search
    budget.py     the accuracy-budget search over quantisation modes, calibrators and float nodes
    tuning.py     Optuna studies of a training stage's settings (trials may run on a Ray cluster)

Kept import-free, so a recipe's settings load without either search.
"""
