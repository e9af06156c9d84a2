"""The negatives experiment's report (jaxrec/experiments/negatives.py)."""


def test_an_arm_that_meets_the_target_at_initialisation_is_reported_at_init():
    from jaxrec.experiments import negatives
    from jaxrec.experiments.runner import Arm

    ref = {"steps_to_target": [240, 360], "seconds_to_target": [20.0, 30.0]}
    fitted = {
        "steps_to_target": [0, 0],  # the validation at step 0 already met it
        "seconds_to_target": [0.0, 0.0],
        "steps_fraction": 0.0,
        "seconds_fraction": 0.0,
        "init_seconds": [1.5, 1.7],
        "test_pairwise_accuracy": [0.79, 0.80],
        "test_relative_change": 0.3,
        "best_valid_pairwise_accuracy": [0.79, 0.8],
        "train_seconds": [10.0, 11.0],
        "test_hr": [0.4, 0.41],
    }
    row = negatives._row(Arm("appeal", "appeal head"), fitted, False, 2)
    assert row[4] == row[5] == "at init (set-up 1.60 ± 0.14 s)"
    summary = {
        "targets": [0.6, 0.61],
        "hr_key": "hr@10",
        "arms": {
            "random_only": {**ref, "test_pairwise_accuracy": [0.6, 0.61], "test_hr": [0.4, 0.4]},
            "appeal": fitted,
        },
    }
    arms = [Arm("random_only", "random only"), Arm("appeal", "appeal head")]
    story = negatives._story(arms, summary, 1200, 2)
    assert "at initialisation" in story and "% of the steps" not in story.split("appeal head")[1]
