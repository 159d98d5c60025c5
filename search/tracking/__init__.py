"""Everything that talks to MLflow: the store client (:mod:`.store`), the durable write queue
(:mod:`.runlog`) and how a trial's config is encoded (:mod:`.params`)."""
