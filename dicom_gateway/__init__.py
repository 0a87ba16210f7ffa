"""DICOM edge: Storage SCP that receives photographs, SCU that sends images and reports."""
