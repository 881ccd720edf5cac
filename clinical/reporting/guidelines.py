"""The items of TRIPOD+AI (Collins et al., BMJ 2024) and CLAIM 2024 (Tejani et al., Radiol AI 2024), and where
the model report answers each one, or why it cannot.

Each item is ``(number, topic, section, note)``: ``section`` is the id of a section of the report
(see :mod:`clinical.reporting.model_report`), or ``None`` when only the authors can answer it (the
note says what they must supply). The wording of the topics is abridged; the checklists themselves
are the reference.
"""

from __future__ import annotations

__all__ = ["CLAIM_2024", "TRIPOD_AI", "guideline_rows"]

_AUTHORS = "outside the platform's knowledge: the authors supply it"

Item = tuple[str, str, str | None, str]

TRIPOD_AI: tuple[Item, ...] = (
    ("1", "Title: development/evaluation of a prediction model, population and outcome", None, _AUTHORS),
    ("2", "Abstract (TRIPOD+AI for Abstracts)", None, _AUTHORS),
    ("3", "Background: healthcare context, rationale, existing models", "intended-use",
     "as far as the intended-use statement says it"),
    ("4", "Objectives: development and/or validation", "intended-use", ""),
    ("5", "Data sources and dates", "data-flow", "sources are pseudonymised; dates are not kept by design"),
    ("6", "Participants: setting, eligibility, treatments", "cohort", "eligibility beyond ingest rules: authors"),
    ("7", "Data preparation and pre-processing", "model", "the recipe's preset and the ingest options"),
    ("8", "Outcome: definition, how and when assessed, blinding", "cohort",
     "the classes are given; how labels were assessed: authors"),
    ("9", "Predictors: definition, pre-selection", "model", "the images themselves, as prepared by the recipe"),
    ("10", "Sample size", "data-flow", "the counts; the justification: authors"),
    ("11", "Missing data", "data-flow", "rejected inputs by reason; unlabelled items are not trained on"),
    ("12", "Analytical methods: model type, building, internal validation, performance measures",
     "performance", "with the recipe in the model section"),
    ("13", "Class imbalance methods", "model", "the recipe's loss and sampling settings"),
    ("14", "Fairness: subgroups considered", "sites", "per site only; other subgroups are not recorded"),
    ("15", "Model output and thresholds", "model", "class probabilities; the threshold the metrics used"),
    ("16", "Differences between development and evaluation data", "split",
     "the roles and the gate set; an external test is not part of this report"),
    ("17", "Ethical approval and consent", None, _AUTHORS),
    ("18", "Open science: funding, conflicts, protocol, registration, data and code availability", "digests",
     "digests identify data and code; funding, conflicts, registration: authors"),
    ("19", "Patient and public involvement", None, _AUTHORS),
    ("20", "Participants: flow, characteristics, comparison of development and evaluation data", "data-flow", ""),
    ("21", "Model development: number of participants and outcome events in each analysis", "split", ""),
    ("22", "Model specification: full model or how to access it", "model",
     "the registered version: models:/NAME/VERSION"),
    ("23", "Model performance with confidence intervals, including subgroups", "performance", ""),
    ("24", "Model updating and its performance", "model", "the registered version and the promotion gate"),
    ("25", "Interpretation: overall, fairness, in context", "limitations", "the facts; the discussion: authors"),
    ("26", "Limitations: non-representative sample, overfitting, sample size", "limitations", ""),
    ("27", "Usability, intended users, further research, handling of poor-quality input", "intended-use",
     "intended use; input quality: the ingest rejection codes"),
)

CLAIM_2024: tuple[Item, ...] = (
    ("1", "Title: AI methodology identified", None, _AUTHORS),
    ("2", "Abstract", None, _AUTHORS),
    ("3", "Background: scientific and clinical context", "intended-use", ""),
    ("4", "Study objectives and hypotheses", "intended-use", ""),
    ("5", "Study design: prospective or retrospective", None, _AUTHORS),
    ("6", "Study goal (e.g. feasibility, non-inferiority)", "intended-use", ""),
    ("7", "Data sources", "data-flow", "pseudonymised sources and sites"),
    ("8", "Eligibility criteria", "data-flow", "ingest's rules as rejection codes; clinical criteria: authors"),
    ("9", "Data pre-processing", "model", "the recipe's preset and the ingest options"),
    ("10", "Selection of data subsets", "split", ""),
    ("11", "De-identification methods", "deidentification", "as DICOM PS3.15 profile and options"),
    ("12", "Handling of missing data", "data-flow", ""),
    ("13", "Image acquisition protocol", "cohort", "modalities per site; protocols: authors"),
    ("14", "Reference standard definition", None, _AUTHORS),
    ("15", "Rationale for the reference standard", None, _AUTHORS),
    ("16", "Source of ground-truth annotations and annotators' qualifications", None, _AUTHORS),
    ("17", "Annotation tools and software", None, _AUTHORS),
    ("18", "Inter- and intra-rater variability", None, _AUTHORS),
    ("19", "Data partitions and their proportions", "split", ""),
    ("20", "Level at which partitions are disjoint", "split", "patients, checked by the leakage audit"),
    ("21", "Intended sample size and how it was determined", "data-flow", "the counts; the reasoning: authors"),
    ("22", "Detailed description of the model", "model", ""),
    ("23", "Software libraries, frameworks and packages", "digests", "the code digest and package version"),
    ("24", "Initialization of model parameters", "model", "the pretraining source"),
    ("25", "Training details: augmentation, hyperparameters, stopping", "model", ""),
    ("26", "Method of selecting the final model", "model", "how the registered model was made"),
    ("27", "Ensembling techniques", "model", "none: one network"),
    ("28", "Metrics of model performance", "performance", ""),
    ("29", "Statistical measures of significance and uncertainty", "performance", "patient-bootstrap CIs"),
    ("30", "Robustness or sensitivity analysis", "sites", "across sites and folds"),
    ("31", "Methods for explainability or interpretability", None,
     "Grad-CAM exists in the platform but is not part of this report"),
    ("32", "Evaluation on internal data", "performance", "cross-validation, pooled out-of-fold"),
    ("33", "Evaluation on external data", None, "not in this report: run a site-held-out split or a new site"),
    ("34", "Flow of participants or cases", "data-flow", ""),
    ("35", "Demographic and clinical characteristics of cases", "cohort", "site and label only; no demographics kept"),
    ("36", "Performance metrics for the optimal model(s)", "performance", ""),
    ("37", "Estimates of diagnostic accuracy and their precision", "performance", ""),
    ("38", "Failure analysis of incorrectly classified cases", None, _AUTHORS),
    ("39", "Study limitations", "limitations", ""),
    ("40", "Implications for practice", "intended-use", "as far as the intended-use statement says it"),
    ("41", "Registration number and registry", None, _AUTHORS),
    ("42", "Where the full study protocol can be accessed", None, _AUTHORS),
    ("43", "Where the full data and code can be accessed", "digests", "digests name them; access: authors"),
    ("44", "Sources of funding and other support", None, _AUTHORS),
)


def guideline_rows() -> list[dict[str, str | None]]:
    """Both checklists as table rows: ``guideline, item, topic, section (or None), note``."""
    return [{"guideline": guideline, "item": number, "topic": topic, "section": section, "note": note}
            for guideline, items in (("TRIPOD+AI", TRIPOD_AI), ("CLAIM 2024", CLAIM_2024))
            for number, topic, section, note in items]
