from frozen_det.projects import runner
from frozen_det.projects.predet import STUDY

runner.main(STUDY)
