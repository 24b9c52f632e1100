#!/usr/bin/env python3
"""The reference a data team would write instead of riskid: pandas + scikit-learn.

Reads a borough written by `riskid generate` (its manifest.json and one CSV per school per
term), builds features from each pupil's last two terms (joined by UPN across schools),
labels each pupil-term with the pupil's outcomes in the next term, and for each test term
(rolling origin: train on every earlier labelled term, test on that one) fits, per outcome,
a logistic regression and a HistGradientBoostingClassifier.

    python tools/reference/pipeline.py --world DIR --out predictions.csv --test-terms 3
    python tools/reference/pipeline.py --world DIR --timing   # one fit on all, score latest

Predictions CSV: academic_year,term,urn,upn,outcome,logistic,hist_gradient_boosting.
It is a benchmark, not part of riskid: `tools/reference/setup.sh` installs its dependencies.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

TERMS = {"autumn": 0, "spring": 1, "summer": 2}
OUTCOMES = ["persistent_absence", "suspension", "mh_referral"]
ATT = {"below": 0.0, "expected": 1.0, "above": 2.0}


def read_world(world):
    with open(os.path.join(world, "manifest.json")) as f:
        manifest = json.load(f)
    frames = []
    for feed in manifest["feeds"]:
        df = pd.read_csv(os.path.join(world, feed["file"]), dtype={"upn": str, "cin": str, "ncyear": str}, keep_default_na=False,
                         na_values=[""])
        year = int(feed["academic_year"][:4])
        df["urn"] = feed["urn"]
        df["academic_year"] = feed["academic_year"]
        df["term"] = feed["term"]
        df["t"] = year * 3 + TERMS[feed["term"]]
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def yn(s):
    return s.map({"Y": 1.0, "N": 0.0})


def features(df):
    d = pd.DataFrame(index=df.index)
    absent = df["sessions_authorised"] + df["sessions_unauthorised"]
    possible = df["sessions_possible"]
    rate = (absent / possible).where(possible >= 20)
    d["absence_rate"] = rate
    d["unauthorised_share"] = (df["sessions_unauthorised"] / absent).where(absent > 0, 0.0)
    d["spells_per_session"] = (df["absence_spells"] / absent).where(absent > 0, 0.0)
    d["suspensions"] = df["suspensions"]
    d["permanent_exclusion"] = yn(df["permanent_exclusion"])
    d["behaviour_incidents"] = df["behaviour_incidents"]
    for c in ["sdq_emotional", "sdq_conduct", "sdq_hyperactivity", "sdq_peer", "sdq_prosocial"]:
        d[c] = df[c]
    d["mh_referral_now"] = yn(df["mh_referral"])
    d["english"] = df["attainment_english"].map(ATT)
    d["maths"] = df["attainment_maths"].map(ATT)
    d["fsm"] = yn(df["fsm"])
    d["eal"] = yn(df["eal"])
    d["sen_support"] = (df["sen"] == "K").astype(float)
    d["ehc_plan"] = (df["sen"] == "E").astype(float)
    d["child_in_need"] = df["cin"].notna().astype(float)
    d["young_carer"] = yn(df["young_carer"])
    d["school_moves"] = df["school_moves"]
    d["ncyear"] = pd.to_numeric(df["ncyear"].astype(str).replace({"R": "0"}))
    d["next_term"] = (df["t"] + 1) % 3
    # Labels: the same pupil's row in the next term, at any school.
    lab = pd.DataFrame({"upn": df["upn"], "t": df["t"] - 1})
    lab["persistent_absence"] = (rate >= 0.10).astype(float).where(rate.notna())
    lab["suspension"] = ((df["suspensions"] > 0) | (df["permanent_exclusion"] == "Y")).astype(float)
    lab["mh_referral"] = d["mh_referral_now"]
    lab = lab.groupby(["upn", "t"], as_index=False).last()
    # The previous term's values, by UPN.
    prev_cols = ["absence_rate", "unauthorised_share", "suspensions", "behaviour_incidents", "mh_referral_now",
                 "sdq_emotional", "sdq_conduct"]
    prev = pd.concat([df[["upn"]], df["t"].rename("t") + 1, d[prev_cols]], axis=1)
    prev = prev.groupby(["upn", "t"], as_index=False).last()
    prev = prev.rename(columns={c: "prev_" + c for c in prev_cols})
    keys = pd.concat([df[["upn", "t", "urn", "academic_year", "term"]], d], axis=1)
    out = keys.merge(prev, on=["upn", "t"], how="left").merge(lab, on=["upn", "t"], how="left")
    return out


def feature_columns(frame):
    skip = {"upn", "t", "urn", "academic_year", "term"} | set(OUTCOMES)
    return [c for c in frame.columns if c not in skip]


def models():
    lr = make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler(),
                       LogisticRegression(C=1.0, max_iter=1000))
    hgb = HistGradientBoostingClassifier(random_state=0)
    return {"logistic": lr, "hist_gradient_boosting": hgb}


def fit_predict(train, test, cols, timings):
    out = {}
    for outcome in OUTCOMES:
        tr = train[train[outcome].notna()]
        for name, model in models().items():
            t0 = time.perf_counter()
            model.fit(tr[cols].to_numpy(), tr[outcome].to_numpy().astype(int))
            out[(outcome, name)] = model.predict_proba(test[cols].to_numpy())[:, 1]
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", required=True)
    ap.add_argument("--out")
    ap.add_argument("--test-terms", type=int, default=3)
    ap.add_argument("--timing", action="store_true", help="one fit on every labelled term, score the latest term")
    a = ap.parse_args()
    timings = {}
    t0 = time.perf_counter()
    raw = read_world(a.world)
    frame = features(raw)
    timings["read_and_features"] = time.perf_counter() - t0
    cols = feature_columns(frame)
    labelled_terms = sorted(frame.loc[frame[OUTCOMES].notna().any(axis=1), "t"].unique())
    rows = []
    if a.timing:
        train = frame[frame["t"] <= labelled_terms[-1]]
        latest = frame[frame["t"] == frame["t"].max()]
        fit_predict(train, latest, cols, timings)
    else:
        for T in labelled_terms[-a.test_terms:]:
            train = frame[frame["t"] < T]
            test = frame[frame["t"] == T]
            preds = fit_predict(train, test, cols, timings)
            for outcome in OUTCOMES:
                rows.append(pd.DataFrame({
                    "academic_year": test["academic_year"].to_numpy(), "term": test["term"].to_numpy(),
                    "urn": test["urn"].to_numpy(), "upn": test["upn"].to_numpy(), "outcome": outcome,
                    "logistic": preds[(outcome, "logistic")],
                    "hist_gradient_boosting": preds[(outcome, "hist_gradient_boosting")],
                }))
        if a.out:
            pd.concat(rows).to_csv(a.out, index=False, float_format="%.6f")
    timings["whole"] = time.perf_counter() - t0
    json.dump({k: round(v, 4) for k, v in timings.items()}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
