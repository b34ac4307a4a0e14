"""The job's life outside the models: sending jobs to the broker (`broker`), the store a worker is
handed (`django_store`, `api_store`), the sweeper (`sweep`, `beat`) and the shared rules of liveness
(`liveness`). The state changes themselves are on the models' QuerySets (explanations and chat)."""
