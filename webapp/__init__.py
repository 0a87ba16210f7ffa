"""The clinicians' web application: graders, the arbitration panel, admins, statisticians."""
