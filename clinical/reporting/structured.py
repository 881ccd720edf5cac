"""A study's prediction as a DICOM Structured Report (TID 1500 Measurement Report), made with highdicom.

One measurement group (TID 1501) holds one NUM content item per class, "Probability of <class>"
(codes of the private scheme ``99CLINICAL``, unit UCUM ``1``), the model's name and version as
Algorithm Identification (TID 4019, TEXT items), and the source instances it read (Source image for
measurement group). The SR joins the source study: patient and study attributes are copied from
the evidence by highdicom, with a new series. It goes back to the PACS the study came from, where
identifiers belong; nothing of it is logged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from clinical.errors import ConfigurationError

__all__ = ["SCHEME", "prediction_sr", "read_prediction_sr"]

#: The coding scheme of the probability concepts (a private one, as DICOM defines no "probability of <class>").
SCHEME = "99CLINICAL"
_UNIT = hd.sr.CodedConcept("1", "UCUM", "no units")
_SERIES_NUMBER = 9901


def _concept(index: int, name: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(f"P{index}", SCHEME, f"Probability of {name}"[:64])


def prediction_sr(
    sources: Sequence[pydicom.Dataset], probabilities: Mapping[str, float], *, model: str, version: str
) -> hd.sr.ComprehensiveSR:
    """The SR of one study's class probabilities (class → probability), referencing ``sources``.

    ``sources`` are the instances the prediction was made from (headers suffice), all of one study.

    Raises
    ------
    ConfigurationError
        With no source instance, sources from several studies, or no probability.
    """
    if not sources or not probabilities:
        raise ConfigurationError("A prediction SR needs the source instances and at least one class probability.")
    if len({str(ds.StudyInstanceUID) for ds in sources}) != 1:
        raise ConfigurationError("The source instances of one prediction SR must all belong to one study.")
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="image classification"),
        algorithm_id=hd.sr.AlgorithmIdentification(name=model, version=str(version)),
        measurements=[hd.sr.Measurement(name=_concept(i, name), value=float(p), unit=_UNIT)
                      for i, (name, p) in enumerate(probabilities.items())],
        source_images=[hd.sr.SourceImageForMeasurementGroup(str(ds.SOPClassUID), str(ds.SOPInstanceUID))
                       for ds in sources],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(),
        procedure_reported=codes.cid100.ImagingProcedure, imaging_measurements=[group],
    )
    return hd.sr.ComprehensiveSR(
        evidence=list(sources), content=report[0], series_instance_uid=generate_uid(), series_number=_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="clinical", is_complete=True,
        series_description=f"AI prediction: {model}"[:64],
    )


def read_prediction_sr(dataset: pydicom.Dataset) -> dict[str, object]:
    """``{"probabilities": {class: p}, "model": name, "version": v, "references": [SOP Instance UIDs]}`` of an SR.

    Read with highdicom's TID 1500 parser, so a report another tool wrote in the same template reads too.
    """
    report = hd.sr.ComprehensiveSR.from_dataset(dataset)
    [group] = report.content.get_image_measurement_groups()
    probabilities = {m.name.meaning.removeprefix("Probability of "): float(m.value)
                     for m in group.get_measurements() if m.name.scheme_designator == SCHEME}
    texts = {item.name.meaning: item.value for item in group[0].ContentSequence
             if item.value_type == hd.sr.ValueTypeValues.TEXT}
    return {"probabilities": probabilities, "model": texts.get("Algorithm Name"),
            "version": texts.get("Algorithm Version"),
            "references": [ref.referenced_sop_instance_uid for ref in group.source_images]}
