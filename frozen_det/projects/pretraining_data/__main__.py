from frozen_det.projects import runner
from frozen_det.projects.pretraining_data import STUDY

runner.main(STUDY)
