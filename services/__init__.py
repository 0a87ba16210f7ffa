"""Domain core of the screening pipeline: no DICOM, Celery, HTTP or torch in here."""
