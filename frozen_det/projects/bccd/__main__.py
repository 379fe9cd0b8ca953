from frozen_det.projects import runner
from frozen_det.projects.bccd import STUDY

runner.main(STUDY)
