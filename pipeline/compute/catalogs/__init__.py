"""The packaged price catalogs (SkyPilot v8 CSVs of Lambda, Nebius and Verda); see ``NOTICE``."""
