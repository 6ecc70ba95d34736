"""PACED's services: the command line now; the Ray actors, store and dashboard compose paced_core here."""
