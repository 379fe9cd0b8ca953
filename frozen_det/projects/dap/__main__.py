from frozen_det.projects import runner
from frozen_det.projects.dap import STUDY

runner.main(STUDY)
