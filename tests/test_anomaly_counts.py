"""Issue 23, review 2: counts of anomalies by class stay as few as the class table's rows."""

from __future__ import annotations

from onss_relay.responses.anomalies import Anomaly, AnomalyTally


def test_unknown_anomaly_classes_are_counted_under_other() -> None:
    """10,000 distinct unknown class values, one known class and one with none: three counts, not 10,002."""
    tally = AnomalyTally()
    for n in range(10_000):
        tally.add(Anomaly("00237-008", f"X{n}", None))
    tally.add(Anomaly("00237-008", "B", None))
    tally.add(Anomaly("00237-008", None, None))
    assert dict(tally.by_class) == {"other": 10_000, "B": 1, "?": 1}


def test_a_summary_names_each_code_once_with_its_count() -> None:
    """Issue 23, review 2: many workers refused for the same code: the summary says it once, with a count."""
    from onss_relay.responses.notification import parse_notification, summary
    from tests.test_real_answers import anomaly, form, notification

    forms = [form(str(n), "0", anomaly("00237-008", "B"), "3") for n in range(5)]
    text = summary(parse_notification(notification(*forms).encode()))
    assert text == "5 workers: 5 refused (00237-008 ×5, blocking)", text
