"""One reader per source family; :mod:`prefpred.data.formats` names them and detects which one a
file needs.

- :mod:`.arena`: Kaggle LMSYS arena (train/test CSV, the HF 55k parquet) and WSDM Cup
- :mod:`.mtbench`: FastChat MT-Bench human judgments (a folder)
- :mod:`.pandalm`: PandaLM (three annotators per row)
- :mod:`.conversations`: arena conversation sets and TRL chosen/rejected pairs
- :mod:`.benchmarks`: Auto-J and LLMEval²
- :mod:`.hh_rlhf`: Anthropic hh-rlhf chosen/rejected transcripts (two-class)
- :mod:`.llmbar`: LLMBar ``dataset.json`` files (two-class)
"""
