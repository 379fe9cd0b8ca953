from frozen_det.projects import runner
from frozen_det.projects.detection_pretraining import STUDY

runner.main(STUDY)
